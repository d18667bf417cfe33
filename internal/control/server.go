// Package control is the daemon's control channel: an HTTP server on a unix
// socket in the image directory (IMAGE/control.sock) and its client.
//
// Endpoints:
//
//	GET  /stats       engine (and passthrough) statistics as a JSON Report (snake_case keys)
//	GET  /metrics     the same figures in Prometheus text format, read at scrape time
//	GET  /info        the daemon's process id, so `reflinkfs umount` can wait for exit
//	POST /drop-cache  write back and evict the block cache (FS.DropCache), like
//	                  writing 3 to /proc/sys/vm/drop_caches; for benchmarks
//
// The server never changes the filesystem's contents; drop-cache commits and
// empties the cache. The socket lives in the image directory, so only who may
// use the image may use it. A socket file left behind by a crashed daemon is
// replaced; one that still answers is not.
package control

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/reflinkfs/reflinkfs"
)

// SocketName is the control socket's file name inside the image directory.
const SocketName = "control.sock"

// Info describes the serving daemon.
type Info struct {
	Pid      int  `json:"pid"`
	ReadOnly bool `json:"read_only"` // the image is open read-only
}

// Serve starts the control server for fsys on socketPath and returns a Closer
// that stops it and removes the socket. The statistics collector is
// registered on reg (so the caller can expose the same registry elsewhere,
// e.g. on a TCP address); with reg nil a private registry is used.
func Serve(fsys *reflinkfs.FS, socketPath string, reg *prometheus.Registry) (io.Closer, error) {
	return ServeSource(fsys, socketPath, reg)
}

// ServeSource is Serve for any statistics source (tests use a fake one).
func ServeSource(src StatsSource, socketPath string, reg *prometheus.Registry) (io.Closer, error) {
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	coll := NewCollector(src)
	if err := reg.Register(coll); err != nil {
		return nil, fmt.Errorf("control: register metrics: %w", err)
	}
	l, err := listenUnix(socketPath)
	if err != nil {
		reg.Unregister(coll)
		return nil, err
	}
	// For the owner only, like the image directory it lives in.
	if err := os.Chmod(socketPath, 0o600); err != nil {
		l.Close()
		reg.Unregister(coll)
		return nil, fmt.Errorf("control socket %s: %w", socketPath, err)
	}

	// A source that knows it is read-only says so in /info (remount uses it).
	readOnly := false
	if ro, ok := src.(interface{ ReadOnly() bool }); ok {
		readOnly = ro.ReadOnly()
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /stats", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, newFullReport(src))
	})
	mux.HandleFunc("GET /info", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, Info{Pid: os.Getpid(), ReadOnly: readOnly})
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("POST /drop-cache", func(w http.ResponseWriter, r *http.Request) {
		d, ok := src.(interface{ DropCache() error })
		if !ok {
			http.Error(w, "this daemon cannot drop its cache", http.StatusNotImplemented)
			return
		}
		if err := d.DropCache(); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		writeJSON(w, newFullReport(src))
	})
	// Profiles of the daemon, for explaining where time goes (root only: the
	// socket is in the image directory). E.g.
	//   curl --unix-socket IMAGE/control.sock http://x/debug/pprof/profile?seconds=10 > cpu.prof
	mux.HandleFunc("GET /debug/pprof/", pprof.Index)
	mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)

	s := &server{
		http: &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second},
		reg:  reg,
		coll: coll,
		done: make(chan struct{}),
	}
	go func() {
		defer close(s.done)
		s.http.Serve(l) // returns http.ErrServerClosed on Close
	}()
	return s, nil
}

type server struct {
	http *http.Server
	reg  *prometheus.Registry
	coll prometheus.Collector
	done chan struct{}
	once sync.Once
}

// Close stops accepting requests, waits briefly for running ones, and
// removes the socket file (the unix listener unlinks it on close).
func (s *server) Close() error {
	s.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.http.Shutdown(ctx); err != nil {
			s.http.Close()
		}
		<-s.done
		s.reg.Unregister(s.coll)
	})
	return nil
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

// listenUnix listens on path, replacing a stale socket file but refusing to
// take over one a live process still answers on.
func listenUnix(path string) (net.Listener, error) {
	l, err := net.Listen("unix", path)
	if err == nil {
		return l, nil
	}
	if !errors.Is(err, syscall.EADDRINUSE) {
		return nil, fmt.Errorf("control socket %s: %w", path, unwrapOpError(err))
	}
	if c, dialErr := net.DialTimeout("unix", path, time.Second); dialErr == nil {
		c.Close()
		return nil, fmt.Errorf("control socket %s: in use by a running daemon (is the image already mounted?)", path)
	}
	fi, statErr := os.Lstat(path)
	if statErr != nil || fi.Mode().Type() != os.ModeSocket {
		return nil, fmt.Errorf("control socket %s: exists and is not a socket", path)
	}
	if err := os.Remove(path); err != nil {
		return nil, fmt.Errorf("control socket %s: remove stale socket: %w", path, err)
	}
	l, err = net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("control socket %s: %w", path, unwrapOpError(err))
	}
	return l, nil
}

// unwrapOpError drops net.OpError's "listen unix PATH:" prefix, which would
// repeat the path the caller already names.
func unwrapOpError(err error) error {
	var op *net.OpError
	if errors.As(err, &op) {
		return op.Err
	}
	return err
}
