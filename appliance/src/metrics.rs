//! Prometheus metrics: requests and errors by code, latency histograms per
//! model, queue depth and connections. Served at `/metrics` on the mTLS
//! port, to admin certificates only.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 2.5,
];

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

/// All counters of the process.
#[derive(Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(String, &'static str), u64>>,
    latency: Mutex<BTreeMap<String, Histogram>>,
    /// Open TLS connections.
    pub connections: AtomicI64,
    /// Connections refused because `max_connections` was reached.
    pub connections_refused: AtomicU64,
    /// Handshakes that failed or timed out.
    pub handshakes_failed: AtomicU64,
    /// Connections cut for flooding control frames (PING, SETTINGS, empty
    /// DATA).
    pub cut_flood: AtomicU64,
    /// Connections cut because the client stopped taking its answers.
    pub cut_stalled: AtomicU64,
    /// Requests refused at `server.max_inflight_mb`.
    pub inflight_refused: AtomicU64,
}

impl Metrics {
    /// Counts one finished call.
    pub fn observe(&self, rpc: &str, code: &'static str, model: &str, latency: Duration) {
        *self
            .requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry((rpc.to_owned(), code))
            .or_default() += 1;
        if rpc == "ModelInfer" && code == "OK" {
            let seconds = latency.as_secs_f64();
            let mut latency = self.latency.lock().unwrap_or_else(PoisonError::into_inner);
            let h = latency.entry(model.to_owned()).or_default();
            for (i, bound) in BUCKETS.iter().enumerate() {
                if seconds <= *bound {
                    h.counts[i] += 1;
                }
            }
            h.count += 1;
            h.sum += seconds;
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self, queue_depth: usize, models_ready: usize) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP appliance_requests_total Calls by RPC and status code."
        );
        let _ = writeln!(out, "# TYPE appliance_requests_total counter");
        for ((rpc, code), n) in self
            .requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
        {
            let _ = writeln!(
                out,
                "appliance_requests_total{{rpc=\"{rpc}\",code=\"{code}\"}} {n}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP appliance_inference_seconds Successful inference latency by model."
        );
        let _ = writeln!(out, "# TYPE appliance_inference_seconds histogram");
        for (model, h) in self
            .latency
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
        {
            for (bound, n) in BUCKETS.iter().zip(h.counts) {
                let _ = writeln!(
                    out,
                    "appliance_inference_seconds_bucket{{model=\"{model}\",le=\"{bound}\"}} {n}"
                );
            }
            let _ = writeln!(
                out,
                "appliance_inference_seconds_bucket{{model=\"{model}\",le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(
                out,
                "appliance_inference_seconds_sum{{model=\"{model}\"}} {}",
                h.sum
            );
            let _ = writeln!(
                out,
                "appliance_inference_seconds_count{{model=\"{model}\"}} {}",
                h.count
            );
        }
        let gauges = [
            (
                "appliance_queue_depth",
                "Inference requests waiting for a worker.",
                queue_depth as i64,
            ),
            (
                "appliance_models_ready",
                "Model versions ready to serve.",
                models_ready as i64,
            ),
            (
                "appliance_connections",
                "Open TLS connections.",
                self.connections.load(Ordering::Relaxed),
            ),
        ];
        for (name, help, value) in gauges {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
            );
        }
        let counters = [
            (
                "appliance_connections_refused_total",
                "Connections refused at max_connections.",
                self.connections_refused.load(Ordering::Relaxed),
            ),
            (
                "appliance_handshakes_failed_total",
                "TLS handshakes that failed or timed out.",
                self.handshakes_failed.load(Ordering::Relaxed),
            ),
            (
                "appliance_connections_cut_flood_total",
                "Connections cut for flooding PING, SETTINGS or empty DATA frames.",
                self.cut_flood.load(Ordering::Relaxed),
            ),
            (
                "appliance_requests_refused_inflight_total",
                "Requests refused because the server held max_inflight_mb of requests.",
                self.inflight_refused.load(Ordering::Relaxed),
            ),
            (
                "appliance_connections_cut_stalled_total",
                "Connections cut because the client took no answer for stall_timeout_s.",
                self.cut_stalled.load(Ordering::Relaxed),
            ),
        ];
        for (name, help, value) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
            );
        }
        out
    }
}
