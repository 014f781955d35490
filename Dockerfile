# The tally image: one static binary on distroless's static base (no shell,
# no package manager, no libc), run as an unprivileged user. Build it from
# the repository root:
#
#   docker build -t tally:dev .
#
# CI cannot build it (no container daemon there); `make chart` runs the
# build stage's go build and checks that its output is static.

# The Go of go.mod's go directive.
FROM golang:1.26.8 AS build
WORKDIR /src
# Modules first, so that a source change does not download them again.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# CGO_ENABLED=0: no libc to link, so the binary runs on a base without one.
# -trimpath keeps the build machine's paths out of the binary.
RUN CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o /out/tally ./cmd/tally

# distroless/static holds CA roots, tzdata and /etc/passwd's nonroot user
# (65532), nothing else. An external model's adapter (model.kind: external,
# tally client --trainer) needs its interpreter, which this image does not
# have: build one FROM it with what the adapter needs.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/tally /usr/local/bin/tally
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/tally"]
CMD ["--help"]
