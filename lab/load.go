package lab

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"time"
)

// request is one request of a failover's load.
type request struct {
	start time.Time
	node  string
	err   error
}

// clientLoad is a failover's traffic: clients GETting one object, each
// request on a new connection, until stopped (at most 20,000 each).
type clientLoad struct {
	stop chan struct{}
	wg   sync.WaitGroup
	once sync.Once
	mu   sync.Mutex
	reqs []request
}

// startLoad starts clients that give each request timeout.
func startLoad(ctx context.Context, c *s3Client, o demoObject, clients int, timeout time.Duration) *clientLoad {
	l := &clientLoad{stop: make(chan struct{})}
	for range clients {
		l.wg.Go(func() {
			for range 20000 {
				select {
				case <-l.stop:
					return
				case <-ctx.Done():
					return
				default:
				}
				r := request{start: time.Now()}
				rctx, cancel := context.WithTimeout(ctx, timeout)
				a, err := c.do(rctx, http.MethodGet, "/"+demoBucket+"/"+o.name, nil)
				cancel()
				switch {
				case err != nil:
					r.err = err
				case a.status != http.StatusOK || a.sum != o.sum:
					r.err = fmt.Errorf("%d %s", a.status, a.body)
				}
				r.node, _, _ = strings.Cut(a.servedBy, "/")
				l.mu.Lock()
				l.reqs = append(l.reqs, r)
				l.mu.Unlock()
			}
		})
	}
	return l
}

// Stop ends the clients and returns every request they made; it may be
// called again.
func (l *clientLoad) Stop() []request {
	l.once.Do(func() { close(l.stop); l.wg.Wait() })
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.reqs
}

// instancePIDs are the PIDs of a node's running HAProxy instances.
func instancePIDs(ctx context.Context, api *nodeAPI, node string) ([]int, error) {
	vs, err := api.status(ctx)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", node, err)
	}
	var pids []int
	for _, in := range vs.Daemon.HAProxy.Instances {
		if in.PID != 0 {
			pids = append(pids, in.PID)
		}
	}
	if len(pids) == 0 {
		return nil, fmt.Errorf("%s has no running HAProxy instance", node)
	}
	return pids, nil
}

// killAll kills node's instances with SIGKILL and returns when it did.
func killAll(node string, pids []int) (time.Time, error) {
	killed := time.Now()
	for _, pid := range pids {
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			return killed, fmt.Errorf("kill %s's instance %d: %w", node, pid, err)
		}
	}
	return killed, nil
}
