//! Prometheus metrics: requests and errors by code, latency histograms per
//! model, queue depth and connections. Served at `/metrics` on the mTLS
//! port, to admin certificates only.
//!
//! Beside our own, the per-model counters Triton dashboards read, with
//! Triton's names and labels (`model`, `version`) where the meaning is the
//! same (see [`TRITON`] for which are exact and which differ).

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

/// Triton's per-model counters: name, help text, and how ours relates.
pub const TRITON: [(&str, &str); 7] = [
    (
        "nv_inference_request_success",
        "Number of successful inference requests, all batch sizes (exact)",
    ),
    (
        "nv_inference_request_failure",
        "Number of failed inference requests, all batch sizes (exact for requests that named a \
         loaded model; refusals before that, e.g. an unknown model, have no model label to count \
         under)",
    ),
    (
        "nv_inference_count",
        "Number of inferences performed: the sum of the first input's first dimension over \
         successful requests (exact for batching models)",
    ),
    (
        "nv_inference_exec_count",
        "Number of model executions performed: one per successful request (exact: the appliance \
         does not batch requests together)",
    ),
    (
        "nv_inference_request_duration_us",
        "Cumulative inference request duration in microseconds, from the decoded request to the \
         answer (exact; Triton's includes its own front end the same way)",
    ),
    (
        "nv_inference_queue_duration_us",
        "Cumulative inference queuing duration in microseconds: waiting for an inference worker \
         (exact; 0 for requests cheap enough to run inline)",
    ),
    (
        "nv_inference_compute_infer_duration_us",
        "Cumulative compute inference duration in microseconds (differs: includes reading the \
         inputs and making the outputs, which Triton counts apart as compute_input and \
         compute_output)",
    ),
];

/// One finished inference request, for Triton's counters.
#[derive(Debug, Clone, Copy)]
pub struct Inference<'a> {
    /// Model name.
    pub model: &'a str,
    /// The version that served (or refused) it.
    pub version: u64,
    /// Whether it succeeded.
    pub ok: bool,
    /// Its batch size.
    pub batch: u64,
    /// From the decoded request to the answer.
    pub request: Duration,
    /// Waiting for a worker.
    pub queue: Duration,
    /// Running the model.
    pub compute: Duration,
}

/// Triton's counters of one model version, in [`TRITON`]'s order.
type TritonCounters = [u64; TRITON.len()];

/// All counters of the process.
#[derive(Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(String, &'static str), u64>>,
    triton: Mutex<BTreeMap<(String, u64), TritonCounters>>,
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

    /// Counts one inference request in Triton's per-model counters.
    pub fn observe_inference(&self, i: &Inference<'_>) {
        let us = |d: Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        let mut triton = self.triton.lock().unwrap_or_else(PoisonError::into_inner);
        let c = triton.entry((i.model.to_owned(), i.version)).or_default();
        if i.ok {
            let add = [1, 0, i.batch, 1, us(i.request), us(i.queue), us(i.compute)];
            for (c, a) in c.iter_mut().zip(add) {
                *c = c.saturating_add(a);
            }
        } else {
            c[1] = c[1].saturating_add(1);
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self, queue_depth: usize, models_ready: usize) -> String {
        let mut out = String::new();
        {
            let triton = self.triton.lock().unwrap_or_else(PoisonError::into_inner);
            for (i, (name, help)) in TRITON.iter().enumerate() {
                let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
                for ((model, version), c) in triton.iter() {
                    let _ = writeln!(
                        out,
                        "{name}{{model=\"{model}\",version=\"{version}\"}} {}",
                        c[i]
                    );
                }
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn triton_counters_add_up_per_model_version() {
        let m = Metrics::default();
        let ms = Duration::from_millis;
        for (version, ok, batch) in [(1, true, 4), (1, true, 1), (1, false, 2), (2, true, 8)] {
            m.observe_inference(&Inference {
                model: "digits",
                version,
                ok,
                batch,
                request: ms(10),
                queue: ms(2),
                compute: ms(7),
            });
        }
        let text = m.render(0, 1);
        for line in [
            "nv_inference_request_success{model=\"digits\",version=\"1\"} 2",
            "nv_inference_request_failure{model=\"digits\",version=\"1\"} 1",
            "nv_inference_count{model=\"digits\",version=\"1\"} 5",
            "nv_inference_exec_count{model=\"digits\",version=\"1\"} 2",
            "nv_inference_request_duration_us{model=\"digits\",version=\"1\"} 20000",
            "nv_inference_queue_duration_us{model=\"digits\",version=\"1\"} 4000",
            "nv_inference_compute_infer_duration_us{model=\"digits\",version=\"1\"} 14000",
            "nv_inference_count{model=\"digits\",version=\"2\"} 8",
            "# TYPE nv_inference_request_success counter",
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
    }
}
