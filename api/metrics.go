package api

import (
	"context"
	"net/http"
	"strconv"
	"time"

	"github.com/go-chi/chi/v5/middleware"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"stele.dev/stele/projections"
)

// metrics are the server's Prometheus metrics.
type metrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

func newMetrics(reg *prometheus.Registry, pool *pgxpool.Pool, ledger Ledger) (*metrics, error) {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "stele_http_requests_total", Help: "HTTP requests by method, route and status code.",
		}, []string{"method", "route", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "stele_http_request_duration_seconds", Help: "HTTP request latency by method and route.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
		}, []string{"method", "route"}),
	}
	cs := []prometheus.Collector{m.requests, m.duration}
	if pool != nil && ledger != nil {
		cs = append(cs, &readModelCollector{pool: pool, ledger: ledger})
	}
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

func (m *metrics) middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		ww := middleware.NewWrapResponseWriter(w, r.ProtoMajor)
		next.ServeHTTP(ww, r)
		route := routePattern(r)
		status := ww.Status()
		if status == 0 {
			status = http.StatusOK
		}
		m.requests.WithLabelValues(r.Method, route, strconv.Itoa(status)).Inc()
		m.duration.WithLabelValues(r.Method, route).Observe(time.Since(start).Seconds())
	})
}

// readModelCollector reports the ledger's head and each projection's
// position, lag and state when scraped.
type readModelCollector struct {
	pool   *pgxpool.Pool
	ledger Ledger
}

var (
	descHead     = prometheus.NewDesc("stele_ledger_head_position", "Position of the last event in the log.", nil, nil)
	descPosition = prometheus.NewDesc("stele_projection_position", "Last log position a projection applied.", []string{"projection"}, nil)
	descLagEv    = prometheus.NewDesc("stele_projection_lag_events", "Events in the log that a projection has not applied yet.", []string{"projection"}, nil)
	descLagSec   = prometheus.NewDesc("stele_projection_lag_seconds", "Age of the oldest event a projection has not applied yet.", []string{"projection"}, nil)
	descHalted   = prometheus.NewDesc("stele_projection_halted", "1 when a projection stopped on an integrity failure of the log.", []string{"projection"}, nil)
	descUp       = prometheus.NewDesc("stele_read_models_up", "1 when the ledger and the projections' state could be read.", nil, nil)
)

func (c *readModelCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descHead, descPosition, descLagEv, descLagSec, descHalted, descUp} {
		ch <- d
	}
}

func (c *readModelCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	h, err := c.ledger.Head(ctx)
	if err != nil {
		ch <- prometheus.MustNewConstMetric(descUp, prometheus.GaugeValue, 0)
		return
	}
	ch <- prometheus.MustNewConstMetric(descHead, prometheus.GaugeValue, float64(h.Position))
	sts, err := projections.Statuses(ctx, c.pool, c.ledger, time.Now())
	if err != nil {
		ch <- prometheus.MustNewConstMetric(descUp, prometheus.GaugeValue, 0)
		return
	}
	ch <- prometheus.MustNewConstMetric(descUp, prometheus.GaugeValue, 1)
	for _, st := range sts {
		ch <- prometheus.MustNewConstMetric(descPosition, prometheus.GaugeValue, float64(st.Position), st.Name)
		ch <- prometheus.MustNewConstMetric(descLagEv, prometheus.GaugeValue, float64(st.LagEvents), st.Name)
		ch <- prometheus.MustNewConstMetric(descLagSec, prometheus.GaugeValue, float64(st.LagMillis)/1000, st.Name)
		halted := 0.0
		if st.Status == "halted" {
			halted = 1
		}
		ch <- prometheus.MustNewConstMetric(descHalted, prometheus.GaugeValue, halted, st.Name)
	}
}
