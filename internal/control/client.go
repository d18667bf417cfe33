package control

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"

	"github.com/reflinkfs/reflinkfs"
)

// Client talks to a daemon's control socket.
type Client struct {
	socketPath string
	http       *http.Client
}

// NewClient returns a client for the control socket at socketPath. No
// connection is made until a request.
func NewClient(socketPath string) *Client {
	dialer := &net.Dialer{}
	return &Client{
		socketPath: socketPath,
		http: &http.Client{Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				return dialer.DialContext(ctx, "unix", socketPath)
			},
			DisableKeepAlives: true,
		}},
	}
}

// Stats returns the daemon's current engine statistics.
func (c *Client) Stats(ctx context.Context) (reflinkfs.Stats, error) {
	r, err := c.Report(ctx)
	return r.Stats(), err
}

// Report returns the daemon's statistics with the derived figures.
func (c *Client) Report(ctx context.Context) (Report, error) {
	var r Report
	err := c.getJSON(ctx, "/stats", &r)
	return r, err
}

// Info returns the daemon's process information.
func (c *Client) Info(ctx context.Context) (Info, error) {
	var i Info
	err := c.getJSON(ctx, "/info", &i)
	return i, err
}

// DropCache asks the daemon to write back and evict its block cache and
// returns the statistics afterwards.
func (c *Client) DropCache(ctx context.Context) (Report, error) {
	var r Report
	body, err := c.do(ctx, http.MethodPost, "/drop-cache")
	if err == nil {
		err = json.Unmarshal(body, &r)
	}
	return r, err
}

// Metrics returns the Prometheus text exposition.
func (c *Client) Metrics(ctx context.Context) (string, error) {
	body, err := c.get(ctx, "/metrics")
	return string(body), err
}

func (c *Client) getJSON(ctx context.Context, path string, v any) error {
	body, err := c.get(ctx, path)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(body, v); err != nil {
		return fmt.Errorf("control socket %s: %s: decode: %w", c.socketPath, path, err)
	}
	return nil
}

func (c *Client) get(ctx context.Context, path string) ([]byte, error) {
	return c.do(ctx, http.MethodGet, path)
}

func (c *Client) do(ctx context.Context, method, path string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, "http://reflinkfs"+path, nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		// url.Error would repeat the made-up URL; the socket path says more.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = unwrapOpError(ue.Err)
		}
		return nil, fmt.Errorf("control socket %s: %w", c.socketPath, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("control socket %s: %s: %w", c.socketPath, path, err)
	}
	if resp.StatusCode != http.StatusOK {
		if msg := strings.TrimSpace(string(body)); msg != "" {
			return nil, fmt.Errorf("control socket %s: %s: %s: %s", c.socketPath, path, resp.Status, msg)
		}
		return nil, fmt.Errorf("control socket %s: %s: %s", c.socketPath, path, resp.Status)
	}
	return body, nil
}
