package dashboard

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

type fixedSource struct{ s State }

func (f fixedSource) State(context.Context) (State, error) { return f.s, nil }

func get(t *testing.T, h http.Handler, method, target, host string, hdr map[string]string) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest(method, target, nil)
	req.Host = host
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	return w
}

// TestGuardWithToken: every request needs the viewer token, as a bearer
// token or as the cookie that ?token= sets; anything else is 401 and
// carries no job data.
func TestGuardWithToken(t *testing.T) {
	const token = "0123456789abcdef0123456789abcdef"
	h := NewCoordinator(Config{Token: token}, fixedSource{State{Job: JobInfo{ID: "secret-job"}}}).Handler()
	for _, tc := range []struct {
		name, method, target string
		hdr                  map[string]string
		want                 int
	}{
		{"no credential/page", "GET", "/", nil, 401},
		{"no credential/api", "GET", "/api/state", nil, 401},
		{"no credential/asset", "GET", "/assets/app.js", nil, 401},
		{"wrong bearer", "GET", "/api/state", map[string]string{"Authorization": "Bearer " + strings.Repeat("x", len(token))}, 401},
		{"token prefix", "GET", "/api/state", map[string]string{"Authorization": "Bearer " + token[:10]}, 401},
		{"wrong cookie", "GET", "/api/state", map[string]string{"Cookie": CookieName + "=nope"}, 401},
		{"wrong query token", "GET", "/?token=nope", nil, 401},
		{"bearer", "GET", "/api/state", map[string]string{"Authorization": "Bearer " + token}, 200},
		{"cookie", "GET", "/api/state", map[string]string{"Cookie": CookieName + "=" + token}, 200},
		{"query token sets the cookie", "GET", "/?token=" + token, nil, 303},
		{"write refused", "POST", "/api/state", map[string]string{"Authorization": "Bearer " + token}, 405},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := get(t, h, tc.method, tc.target, "dash.example:8080", tc.hdr)
			if w.Code != tc.want {
				t.Fatalf("status %d, want %d: %s", w.Code, tc.want, w.Body.String())
			}
			if w.Code != 200 && strings.Contains(w.Body.String(), "secret-job") {
				t.Errorf("a refused request got job data: %s", w.Body.String())
			}
			if w.Code == 303 {
				c := w.Result().Cookies()
				if len(c) != 1 || c[0].Name != CookieName || c[0].Value != token || !c[0].HttpOnly || c[0].SameSite != http.SameSiteStrictMode {
					t.Errorf("cookie %+v, want an HttpOnly, SameSite=Strict %s", c, CookieName)
				}
				if loc := w.Header().Get("Location"); strings.Contains(loc, token) {
					t.Errorf("redirect keeps the token in the address: %s", loc)
				}
			}
		})
	}
}

// TestGuardOpen: without a token, only requests addressed to a loopback
// host name are answered (no DNS rebinding), and Serve refuses to listen
// beyond loopback.
func TestGuardOpen(t *testing.T) {
	h := NewCoordinator(Config{}, fixedSource{State{Job: JobInfo{ID: "j"}}}).Handler()
	for host, want := range map[string]int{"127.0.0.1:8080": 200, "localhost:8080": 200, "[::1]:8080": 200, "evil.example:8080": 403, "10.0.0.7:8080": 403} {
		if w := get(t, h, "GET", "/api/state", host, nil); w.Code != want {
			t.Errorf("Host %s: status %d, want %d", host, w.Code, want)
		}
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	wide := wideListener{lis}
	err = NewCoordinator(Config{}, fixedSource{}).Serve(context.Background(), wide)
	if !errors.Is(err, ErrOpen) {
		t.Fatalf("Serve without a token on %s: %v, want %v", wide.Addr(), err, ErrOpen)
	}
	for addr, want := range map[string]bool{"127.0.0.1:1": true, "[::1]:1": true, "0.0.0.0:1": false, "[::]:1": false, "192.168.1.2:1": false} {
		a, err := net.ResolveTCPAddr("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		if got := Loopback(a); got != want {
			t.Errorf("Loopback(%s) = %v, want %v", addr, got, want)
		}
	}
	for addr, want := range map[string]bool{"127.0.0.1:8080": true, "localhost:8080": true, "[::1]:8080": true, ":8080": false, "0.0.0.0:8080": false, "dash.example:8080": false} {
		if got := LoopbackHost(addr); got != want {
			t.Errorf("LoopbackHost(%q) = %v, want %v", addr, got, want)
		}
	}
}

// wideListener claims to listen on every interface.
type wideListener struct{ net.Listener }

func (wideListener) Addr() net.Addr { return &net.TCPAddr{IP: net.IPv4zero, Port: 8080} }

// TestTokenFromFile: a missing file is created with a fresh token, mode
// 0600, and read back the same; a short token is refused.
func TestTokenFromFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "viewer.token")
	tok, created, err := TokenFromFile(path)
	if err != nil || !created || len(tok) < 32 {
		t.Fatalf("TokenFromFile(new) = %q, %v, %v", tok, created, err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("token file mode %v (%v), want 0600", fi.Mode(), err)
	}
	again, created, err := TokenFromFile(path)
	if err != nil || created || again != tok {
		t.Fatalf("TokenFromFile(existing) = %q, %v, %v; want %q", again, created, err, tok)
	}
	if err := os.WriteFile(path, []byte("short\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := TokenFromFile(path); !errors.Is(err, ErrToken) {
		t.Fatalf("short token: %v, want %v", err, ErrToken)
	}
}
