// The real node's app: the lab's backend (lab/backend/server.mjs) for a busybox image, where there is
// no node runtime. Same arguments, same shutdown behaviours, same JSON log lines on stdout with
// realtime ns (the truth reads them back from the container's log):
//
//	rolltrace-app [--stamps DIR] [--port N] [--shutdown close|drain|ignore] [--drain-ms N] [--start-delay-ms N] [--work-ms N] [--name S]
//	rolltrace-app pause     the pod sandbox's process: reaps children, exits at SIGTERM/SIGINT
package main

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

var (
	name   string
	port   int
	logMu  sync.Mutex
	stdout = os.Stdout
	// --stamps DIR: the same lines appended to DIR/<name>.jsonl (a hostPath: it outlives the pod)
	stamps *os.File
)

func logEv(ev string, extra map[string]any) {
	m := map[string]any{"ev": ev, "ts_ns": time.Now().UnixNano(), "pid": os.Getpid(), "name": name, "port": port}
	for k, v := range extra {
		m[k] = v
	}
	b, _ := json.Marshal(m)
	logMu.Lock()
	stdout.Write(append(b, '\n'))
	if stamps != nil {
		stamps.Write(append(b, '\n'))
	}
	logMu.Unlock()
}

func pause() {
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGCHLD)
	for s := range sigs {
		if s == syscall.SIGCHLD {
			for {
				var ws syscall.WaitStatus
				pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
				if pid <= 0 || err != nil {
					break
				}
			}
			continue
		}
		os.Exit(0)
	}
}

func main() {
	args := os.Args[1:]
	if len(args) > 0 && args[0] == "pause" {
		pause()
		return
	}
	opt := func(k, d string) string {
		for i := 0; i+1 < len(args); i++ {
			if args[i] == "--"+k {
				return args[i+1]
			}
		}
		return d
	}
	num := func(k, d string) int {
		n, err := strconv.Atoi(opt(k, d))
		if err != nil {
			fmt.Fprintf(os.Stderr, "rolltrace-app: --%s: not a number\n", k)
			os.Exit(2)
		}
		return n
	}
	host, _ := os.Hostname()
	name = opt("name", host)
	port = num("port", "8080")
	mode := opt("shutdown", "close")
	drainMs := num("drain-ms", "5000")
	startDelayMs := num("start-delay-ms", "0")
	workMs := num("work-ms", "0")
	if dir := opt("stamps", ""); dir != "" {
		f, err := os.OpenFile(dir+"/"+name+".jsonl", os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			fmt.Fprintf(os.Stderr, "rolltrace-app: --stamps: %v\n", err)
			os.Exit(2)
		}
		stamps = f
	}

	var inflight, requests atomic.Int64
	var closing atomic.Bool
	srv := &http.Server{IdleTimeout: time.Second}
	srv.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if len(r.URL.Path) >= 8 && r.URL.Path[:8] == "/healthz" {
			fmt.Fprint(w, "ok\n")
			return
		}
		inflight.Add(1)
		n := requests.Add(1)
		work := workMs
		if v := r.URL.Query().Get("work"); v != "" {
			if x, err := strconv.Atoi(v); err == nil {
				work = x
			}
		}
		if work > 0 {
			time.Sleep(time.Duration(work) * time.Millisecond)
		}
		w.Header().Set("content-type", "text/plain")
		if closing.Load() {
			w.Header().Set("connection", "close")
		}
		fmt.Fprintf(w, "%s %d\n", name, n)
		inflight.Add(-1)
	})

	// every connection's state: at shutdown the app finishes what it accepted (a connection accepted
	// before the listener closed whose request is still on its way is served, not dropped as idle)
	var connMu sync.Mutex
	conns := map[net.Conn]http.ConnState{}
	srv.ConnState = func(c net.Conn, s http.ConnState) {
		connMu.Lock()
		if s == http.StateClosed || s == http.StateHijacked {
			delete(conns, c)
		} else {
			conns[c] = s
		}
		connMu.Unlock()
	}
	busy := func() int {
		connMu.Lock()
		defer connMu.Unlock()
		n := 0
		for c, s := range conns {
			if s == http.StateIdle {
				c.Close()
				continue
			}
			n++
		}
		return n
	}
	// the pod's own addresses: the truth maps connections to pods by them
	var ips []string
	if addrs, err := net.InterfaceAddrs(); err == nil {
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil && !n.IP.IsLoopback() {
				ips = append(ips, n.IP.String())
			}
		}
	}
	logEv("started", map[string]any{"mode": mode, "ips": ips})
	var ln net.Listener
	var lnMu sync.Mutex
	listening := make(chan struct{})
	go func() {
		if startDelayMs > 0 {
			time.Sleep(time.Duration(startDelayMs) * time.Millisecond)
		}
		l, err := net.Listen("tcp4", fmt.Sprintf("0.0.0.0:%d", port))
		if err != nil {
			logEv("error", map[string]any{"error": err.Error()})
			os.Exit(1)
		}
		lnMu.Lock()
		ln = l
		lnMu.Unlock()
		logEv("listening", map[string]any{"start_delay_ms": startDelayMs})
		close(listening)
		srv.Serve(l)
	}()

	var closedOnce sync.Once
	closeListener := func() {
		closedOnce.Do(func() {
			lnMu.Lock()
			l := ln
			lnMu.Unlock()
			// stamped right before close(2), and right after it returned
			before := time.Now().UnixNano()
			if l != nil {
				l.Close()
			}
			logEv("listener-closed", map[string]any{"ts_ns": before, "after_ns": time.Now().UnixNano()})
		})
	}
	exit := func(forced bool) {
		logEv("exit", map[string]any{"code": 0, "requests": requests.Load(), "forced": forced})
		os.Exit(0)
	}
	drainAndExit := func() {
		srv.SetKeepAlivesEnabled(false)
		closeListener()
		deadline := time.Now().Add(2 * time.Second)
		for busy() > 0 {
			if time.Now().After(deadline) {
				exit(true)
			}
			time.Sleep(5 * time.Millisecond)
		}
		exit(false)
	}

	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	for s := range sigs {
		if s == syscall.SIGINT {
			logEv("exit", map[string]any{"code": 130, "requests": requests.Load()})
			os.Exit(130)
		}
		logEv("sigterm", map[string]any{"mode": mode, "inflight": inflight.Load()})
		if mode == "ignore" {
			continue
		}
		if closing.Swap(true) {
			continue
		}
		if mode == "drain" {
			go func() {
				time.Sleep(time.Duration(drainMs) * time.Millisecond)
				drainAndExit()
			}()
			continue
		}
		go drainAndExit()
	}
}
