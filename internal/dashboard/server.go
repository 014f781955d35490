package dashboard

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"
)

//go:embed assets
var assets embed.FS

// Errors of the dashboard.
var (
	// ErrOpen means a dashboard without a viewer credential was to listen
	// beyond loopback.
	ErrOpen = errors.New("dashboard: a dashboard reachable beyond loopback needs a viewer token")
	// ErrToken means a viewer token file is unusable.
	ErrToken = errors.New("dashboard: bad viewer token file")
)

// CookieName carries the viewer credential once a browser presented it.
const CookieName = "tally_viewer"

// Config assembles a dashboard server.
type Config struct {
	// Token is the viewer credential; "" serves without one, which is
	// allowed on a loopback address only.
	Token string
	// Log receives refusals and source errors; nil discards.
	Log *slog.Logger
}

// Server serves one page and its JSON over HTTP, read-only.
type Server struct {
	cfg  Config
	mux  *http.ServeMux
	open bool
}

// Handler is the dashboard's HTTP handler, with the access check.
func (s *Server) Handler() http.Handler { return s.guard(s.mux) }

func newServer(cfg Config) *Server {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	return &Server{cfg: cfg, mux: http.NewServeMux(), open: cfg.Token == ""}
}

// NewCoordinator returns the coordinator dashboard of src: the page at /,
// its script and style under /assets/, and the state at /api/state.
func NewCoordinator(cfg Config, src Source) *Server {
	s := newServer(cfg)
	s.mux.Handle("GET /assets/", http.FileServerFS(assets))
	s.mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		b, _ := assets.ReadFile("assets/index.html")
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Write(b)
	})
	s.mux.HandleFunc("GET /api/state", func(w http.ResponseWriter, r *http.Request) {
		st, err := src.State(r.Context())
		if err != nil {
			s.cfg.Log.Warn("dashboard: state unavailable", "err", err)
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		json.NewEncoder(w).Encode(st)
	})
	return s
}

// Serve serves h on lis until ctx ends, then shuts down, letting requests
// in flight finish for up to five seconds. It refuses to serve without a
// viewer token on an address beyond loopback.
func (s *Server) Serve(ctx context.Context, lis net.Listener) error {
	if s.open && !Loopback(lis.Addr()) {
		lis.Close()
		return fmt.Errorf("%w: %s", ErrOpen, lis.Addr())
	}
	hs := &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(s.cfg.Log.Handler(), slog.LevelWarn)}
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(lis) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := hs.Shutdown(sctx); err != nil {
		return err
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// Loopback reports whether addr is on a loopback interface only.
func Loopback(addr net.Addr) bool {
	host := addr.String()
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// guard checks the viewer credential of every request: the token as a
// bearer token, as the cookie, or once as ?token= (which sets the cookie
// and redirects to the same page without it, so the token leaves the
// address bar and the history). Without a token it admits only requests
// addressed to a loopback name: a page elsewhere cannot rebind its own
// host name to 127.0.0.1 to read the dashboard.
func (s *Server) guard(next http.Handler) http.Handler {
	var want [32]byte
	if !s.open {
		want = sha256.Sum256([]byte(s.cfg.Token))
	}
	ok := func(got string) bool {
		h := sha256.Sum256([]byte(got))
		// Hashes of equal length: the comparison takes the same time
		// whatever the token presented.
		return got != "" && subtle.ConstantTimeCompare(h[:], want[:]) == 1
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("X-Frame-Options", "DENY")
		// Handlers that inline their script replace this policy.
		h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'")
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			http.Error(w, "the dashboard is read-only", http.StatusMethodNotAllowed)
			return
		}
		if s.open {
			if !LoopbackHost(r.Host) {
				s.refuse(w, r, http.StatusForbidden, "this dashboard answers only to a loopback host name (localhost, 127.0.0.1, [::1])")
				return
			}
			next.ServeHTTP(w, r)
			return
		}
		if tok := r.URL.Query().Get("token"); tok != "" {
			if !ok(tok) {
				s.refuse(w, r, http.StatusUnauthorized, "the viewer token given is not this dashboard's")
				return
			}
			http.SetCookie(w, &http.Cookie{Name: CookieName, Value: tok, Path: "/", HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil})
			q := r.URL.Query()
			q.Del("token")
			u := url.URL{Path: r.URL.Path, RawQuery: q.Encode()}
			http.Redirect(w, r, u.String(), http.StatusSeeOther)
			return
		}
		got := ""
		if a := r.Header.Get("Authorization"); strings.HasPrefix(a, "Bearer ") {
			got = strings.TrimPrefix(a, "Bearer ")
		} else if c, err := r.Cookie(CookieName); err == nil {
			got = c.Value
		}
		if !ok(got) {
			h.Set("WWW-Authenticate", `Bearer realm="tally dashboard"`)
			s.refuse(w, r, http.StatusUnauthorized, "this dashboard needs its viewer token: open it as /?token=TOKEN once, or send Authorization: Bearer TOKEN")
			return
		}
		next.ServeHTTP(w, r)
	})
}

// LoopbackHost reports whether hostport (a listen address or a Host
// header) names a loopback host: localhost or a loopback IP. An empty
// host (all interfaces) is not one.
func LoopbackHost(hostport string) bool {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	host = strings.Trim(host, "[]")
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// refuse answers a refused request with a small self-contained page.
func (s *Server) refuse(w http.ResponseWriter, r *http.Request, code int, why string) {
	s.cfg.Log.Warn("dashboard: request refused", "path", r.URL.Path, "status", code, "reason", why)
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	fmt.Fprintf(w, "<!doctype html><html><head><meta charset=utf-8><title>%d %s</title></head><body id=refused data-status=%d><h1>%d %s</h1><p>%s</p></body></html>\n",
		code, http.StatusText(code), code, code, http.StatusText(code), why)
}

// TokenFromFile returns the viewer token kept in path, creating the file
// with a fresh random token (mode 0600) if it does not exist; created
// reports whether it did.
func TokenFromFile(path string) (token string, created bool, err error) {
	b, err := os.ReadFile(path)
	if err == nil {
		tok := strings.TrimSpace(string(b))
		if len(tok) < 16 || strings.ContainsAny(tok, " \t\r\n") {
			return "", false, fmt.Errorf("%w: %s: want one line of at least 16 characters without spaces", ErrToken, path)
		}
		return tok, false, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return "", false, fmt.Errorf("%w: %v", ErrToken, err)
	}
	var raw [24]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", false, err
	}
	tok := hex.EncodeToString(raw[:])
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return "", false, fmt.Errorf("%w: %v", ErrToken, err)
	}
	if _, err := fmt.Fprintln(f, tok); err != nil {
		f.Close()
		return "", false, err
	}
	return tok, true, f.Close()
}
