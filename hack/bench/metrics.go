package main

import (
	"bufio"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
)

// scrape reads the tupper daemon's Prometheus /metrics into a map from
// each sample's name with labels (as written) to its value.
func (b *bench) scrape() (map[string]float64, error) {
	if b.tupperMetrics == "" {
		return nil, errors.New("no metrics URL")
	}
	resp, err := http.Get(b.tupperMetrics)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: %s", b.tupperMetrics, resp.Status)
	}
	m := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			return nil, fmt.Errorf("metrics line %q: %w", line, err)
		}
		m[line[:i]] = v
	}
	return m, sc.Err()
}

// usageWalks reads tupper_snapshotter_usage_walks_total from the daemon's
// /metrics (the sum over its labels).
func (b *bench) usageWalks() (float64, error) {
	m, err := b.scrape()
	if err != nil {
		return 0, err
	}
	var sum float64
	found := false
	for k, v := range m {
		if strings.HasPrefix(k, "tupper_snapshotter_usage_walks_total") {
			sum += v
			found = true
		}
	}
	if !found {
		return 0, errors.New("no tupper_snapshotter_usage_walks_total in /metrics")
	}
	return sum, nil
}

// handling is the daemon's gRPC server handling time by method: the sum
// of seconds and the count of calls.
type handling map[string][2]float64

// daemonTimes reads grpc_server_handling_seconds of the snapshot service.
func (b *bench) daemonTimes() (handling, error) {
	m, err := b.scrape()
	if err != nil {
		return nil, err
	}
	h := handling{}
	for k, v := range m {
		for i, suffix := range []string{"_sum{", "_count{"} {
			if !strings.HasPrefix(k, "grpc_server_handling_seconds"+suffix) {
				continue
			}
			_, rest, ok := strings.Cut(k, `grpc_method="`)
			if !ok {
				continue
			}
			method, _, _ := strings.Cut(rest, `"`)
			e := h[method]
			e[i] += v
			h[method] = e
		}
	}
	if len(h) == 0 {
		return nil, errors.New("no grpc_server_handling_seconds in /metrics")
	}
	return h, nil
}

// since is the mean handling time in ms of method's calls between
// earlier and h.
func (h handling) since(earlier handling, method string) (float64, bool) {
	n := h[method][1] - earlier[method][1]
	if n <= 0 {
		return 0, false
	}
	return (h[method][0] - earlier[method][0]) / n * 1000, true
}
