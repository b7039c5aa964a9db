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

/// A count and the time it took, in nanoseconds (Triton's
/// `StatisticDuration`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Timed {
    /// How many.
    pub count: u64,
    /// Their total duration.
    pub ns: u64,
}

impl Timed {
    fn add(&mut self, d: Duration) {
        self.count = self.count.saturating_add(1);
        self.ns = self
            .ns
            .saturating_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    }
}

/// Batch sizes tracked apart per model version; requests of other sizes
/// still count in the totals.
const MAX_BATCH_SIZES: usize = 64;

/// What one model version has served: the source of both Triton's
/// `/metrics` counters and the statistics extension.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModelStats {
    /// Successful requests, decoded request to answer.
    pub success: Timed,
    /// Failed requests.
    pub fail: Timed,
    /// Waiting for a worker (successful requests).
    pub queue: Timed,
    /// Running the model, inputs and outputs included (successful
    /// requests).
    pub compute: Timed,
    /// The sum of the batch sizes of successful requests.
    pub inference_count: u64,
    /// Model executions: one per successful request (no request batching).
    pub execution_count: u64,
    /// When the last request finished, in milliseconds since the epoch.
    pub last_inference_ms: u64,
    /// Successful requests by batch size: count and compute time.
    pub batches: BTreeMap<u64, Timed>,
}

/// All counters of the process.
#[derive(Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(String, &'static str), u64>>,
    models: Mutex<BTreeMap<(String, u64), ModelStats>>,
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

    /// Counts one inference request in its model version's statistics.
    pub fn observe_inference(&self, i: &Inference<'_>) {
        let mut models = self.models.lock().unwrap_or_else(PoisonError::into_inner);
        let s = models.entry((i.model.to_owned(), i.version)).or_default();
        s.last_inference_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        if !i.ok {
            s.fail.add(i.request);
            return;
        }
        // One update under one lock: a snapshot never shows a request in
        // one count and not another (perf_analyzer checks they agree).
        s.success.add(i.request);
        s.queue.add(i.queue);
        s.compute.add(i.compute);
        s.inference_count = s.inference_count.saturating_add(i.batch);
        s.execution_count = s.execution_count.saturating_add(1);
        if s.batches.len() < MAX_BATCH_SIZES || s.batches.contains_key(&i.batch) {
            s.batches.entry(i.batch).or_default().add(i.compute);
        }
    }

    /// The statistics of every model version that has served a request.
    pub fn model_stats(&self) -> BTreeMap<(String, u64), ModelStats> {
        self.models
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Forgets the statistics of versions no longer loaded, so a box that
    /// installs model after model does not keep a row for each.
    pub fn retain_models(&self, keep: impl Fn(&str, u64) -> bool) {
        self.models
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|(name, version), _| keep(name, *version));
    }

    /// The Prometheus text exposition.
    pub fn render(&self, queue_depth: usize, models_ready: usize) -> String {
        let mut out = String::new();
        {
            let models = self.models.lock().unwrap_or_else(PoisonError::into_inner);
            let us = |t: Timed| t.ns / 1000;
            for (i, (name, help)) in TRITON.iter().enumerate() {
                let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
                for ((model, version), s) in models.iter() {
                    let value = [
                        s.success.count,
                        s.fail.count,
                        s.inference_count,
                        s.execution_count,
                        us(s.success),
                        us(s.queue),
                        us(s.compute),
                    ][i];
                    let _ = writeln!(
                        out,
                        "{name}{{model=\"{model}\",version=\"{version}\"}} {value}"
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
        let stats = m.model_stats();
        let v1 = &stats[&("digits".to_owned(), 1)];
        // The counts perf_analyzer compares always agree.
        assert_eq!(v1.success.count, 2);
        assert_eq!(v1.queue.count, 2);
        assert_eq!(v1.compute.count, 2);
        assert_eq!(
            v1.fail,
            Timed {
                count: 1,
                ns: 10_000_000
            }
        );
        assert_eq!(
            v1.batches[&4],
            Timed {
                count: 1,
                ns: 7_000_000
            }
        );
        assert_eq!(v1.batches[&1].count, 1);
        assert!(
            !v1.batches.contains_key(&2),
            "failures are not batch statistics"
        );
        assert!(v1.last_inference_ms > 1_700_000_000_000);
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
        m.retain_models(|_, version| version == 2);
        assert_eq!(m.model_stats().len(), 1);
        assert!(!m.render(0, 1).contains("version=\"1\""));
    }

    #[test]
    fn batch_sizes_tracked_apart_are_bounded() {
        let m = Metrics::default();
        for batch in 1..=(MAX_BATCH_SIZES as u64 + 10) {
            m.observe_inference(&Inference {
                model: "m",
                version: 1,
                ok: true,
                batch,
                request: Duration::from_micros(3),
                queue: Duration::ZERO,
                compute: Duration::from_micros(2),
            });
        }
        let stats = m.model_stats();
        let s = &stats[&("m".to_owned(), 1)];
        assert_eq!(s.batches.len(), MAX_BATCH_SIZES);
        assert_eq!(s.success.count, MAX_BATCH_SIZES as u64 + 10);
    }
}
