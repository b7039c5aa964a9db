//! A meter for the HTTP/2 frames a client sends, read off the decrypted
//! byte stream before hyper sees it.
//!
//! hyper (through `h2`) already bounds streams, header lists, resets and
//! CONTINUATION runs, but it answers every PING and SETTINGS frame, as many
//! as a client cares to send: a flood costs the server a write per frame and
//! nothing to the client. The meter charges each such frame (and each empty
//! DATA frame, which carries nothing and ends nothing) against a token
//! bucket; a client that empties it is cut. Well-behaved clients send a few
//! keep-alive or bandwidth-probe pings per second at most, far inside the
//! bucket.
//!
//! Only frame headers are parsed (nine bytes: length, type, flags, stream);
//! payloads are skipped, except a SETTINGS frame's length, which says how
//! many settings it carries. Malformed frames are hyper's business: the
//! meter never fails on them, it only counts. A connection that does not
//! open with the HTTP/2 preface (HTTP/1.1, which has no control frames) is
//! not metered at all.

use std::time::{Duration, Instant};

/// The client connection preface (RFC 9113 §3.4), before the first frame.
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const HEADER_LEN: usize = 9;

const DATA: u8 = 0x0;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const ACK: u8 = 0x1;
const END_STREAM: u8 = 0x1;

/// How many control frames a client may send in a burst, and how fast the
/// allowance comes back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Frames allowed at once.
    pub burst: u32,
    /// Frames the allowance regains per second.
    pub per_second: u32,
}

impl Default for Budget {
    fn default() -> Self {
        // gRPC clients send at most a handful per second (keep-alive and
        // BDP probes); a flood sends hundreds of thousands.
        Budget {
            burst: 1000,
            per_second: 100,
        }
    }
}

/// What emptied the bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flood {
    /// PING frames (not acknowledgements).
    Ping,
    /// SETTINGS frames (not acknowledgements), one per setting.
    Settings,
    /// DATA frames with no data that do not end their stream.
    EmptyData,
}

impl Flood {
    /// The name used in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Flood::Ping => "ping",
            Flood::Settings => "settings",
            Flood::EmptyData => "empty-data",
        }
    }
}

#[derive(Debug)]
enum State {
    /// Bytes of the preface seen so far.
    Preface(usize),
    /// Not HTTP/2: nothing to meter.
    Off,
    /// A frame header being assembled.
    Header([u8; HEADER_LEN], usize),
    /// Payload bytes to skip.
    Payload(usize),
}

/// Counts one client's control frames against a [`Budget`].
#[derive(Debug)]
pub struct FrameMeter {
    state: State,
    budget: Budget,
    /// Tokens, in thousandths, so slow refill rates stay exact.
    milli_tokens: u64,
    refilled: Instant,
    frames: u64,
}

impl FrameMeter {
    /// A meter for a server-side connection: the client preface comes
    /// first.
    pub fn new(budget: Budget, now: Instant) -> Self {
        FrameMeter {
            state: State::Preface(0),
            budget,
            milli_tokens: u64::from(budget.burst) * 1000,
            refilled: now,
            frames: 0,
        }
    }

    /// Frames seen so far (headers complete).
    pub fn frames(&self) -> u64 {
        self.frames
    }

    /// Accounts for bytes the client sent, in order. An error means the
    /// client has sent more control frames than its budget allows; the
    /// meter stays in that state.
    pub fn feed(&mut self, mut bytes: &[u8], now: Instant) -> Result<(), Flood> {
        self.refill(now);
        while !bytes.is_empty() {
            match &mut self.state {
                State::Preface(seen) => {
                    let n = (PREFACE.len() - *seen).min(bytes.len());
                    if bytes[..n] != PREFACE[*seen..*seen + n] {
                        self.state = State::Off;
                        return Ok(());
                    }
                    bytes = &bytes[n..];
                    *seen += n;
                    if *seen == PREFACE.len() {
                        self.state = State::Header([0; HEADER_LEN], 0);
                    }
                }
                State::Off => return Ok(()),
                State::Payload(left) => {
                    let n = (*left).min(bytes.len());
                    bytes = &bytes[n..];
                    *left -= n;
                    if *left == 0 {
                        self.state = State::Header([0; HEADER_LEN], 0);
                    }
                }
                State::Header(header, have) => {
                    let n = (HEADER_LEN - *have).min(bytes.len());
                    header[*have..*have + n].copy_from_slice(&bytes[..n]);
                    *have += n;
                    bytes = &bytes[n..];
                    if *have == HEADER_LEN {
                        let header = *header;
                        let length = usize::from(header[0]) << 16
                            | usize::from(header[1]) << 8
                            | usize::from(header[2]);
                        self.frames += 1;
                        self.state = if length == 0 {
                            State::Header([0; HEADER_LEN], 0)
                        } else {
                            State::Payload(length)
                        };
                        self.charge(header[3], header[4], length)?;
                    }
                }
            }
        }
        Ok(())
    }

    fn charge(&mut self, kind: u8, flags: u8, length: usize) -> Result<(), Flood> {
        let (cost, flood) = match kind {
            PING if flags & ACK == 0 => (1, Flood::Ping),
            // Each setting is six bytes; a frame of many costs as many.
            SETTINGS if flags & ACK == 0 => ((length / 6).max(1) as u64, Flood::Settings),
            DATA if length == 0 && flags & END_STREAM == 0 => (1, Flood::EmptyData),
            _ => return Ok(()),
        };
        let cost = cost.saturating_mul(1000);
        if self.milli_tokens < cost {
            self.milli_tokens = 0;
            return Err(flood);
        }
        self.milli_tokens -= cost;
        Ok(())
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.refilled);
        // Whole milliseconds only, so no refill is lost to rounding.
        let ms = elapsed.as_millis().min(u128::from(u32::MAX)) as u64;
        if ms == 0 {
            return;
        }
        self.refilled += Duration::from_millis(ms);
        let cap = u64::from(self.budget.burst) * 1000;
        self.milli_tokens = (self.milli_tokens + ms * u64::from(self.budget.per_second)).min(cap);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = payload.len() as u32;
        let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
        f.extend_from_slice(&stream.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    fn budget(burst: u32, per_second: u32) -> Budget {
        Budget { burst, per_second }
    }

    #[test]
    fn http1_connections_are_not_metered() {
        let t = Instant::now();
        let mut m = FrameMeter::new(budget(2, 0), t);
        m.feed(b"POST /v2/models/digits/infer HTTP/1.1\r\n", t)
            .unwrap();
        // Bytes that would be PING frames on an HTTP/2 connection.
        for _ in 0..10 {
            m.feed(&frame(PING, 0, 0, &[0; 8]), t).unwrap();
        }
        assert_eq!(m.frames(), 0);
        // A preface that goes wrong part-way is not HTTP/2 either.
        let mut m = FrameMeter::new(budget(2, 0), t);
        m.feed(&PREFACE[..10], t).unwrap();
        m.feed(b"garbage", t).unwrap();
        for _ in 0..10 {
            m.feed(&frame(PING, 0, 0, &[0; 8]), t).unwrap();
        }
        assert_eq!(m.frames(), 0);
    }

    #[test]
    fn a_ping_flood_is_cut_when_the_burst_is_spent() {
        let t = Instant::now();
        let mut m = FrameMeter::new(budget(10, 1), t);
        m.feed(PREFACE, t).unwrap();
        for _ in 0..10 {
            m.feed(&frame(PING, 0, 0, &[0; 8]), t).unwrap();
        }
        assert_eq!(m.feed(&frame(PING, 0, 0, &[0; 8]), t), Err(Flood::Ping));
    }

    #[test]
    fn answers_and_real_traffic_cost_nothing() {
        let t = Instant::now();
        let mut m = FrameMeter::new(budget(1, 1), t);
        m.feed(PREFACE, t).unwrap();
        for _ in 0..100 {
            m.feed(&frame(PING, ACK, 0, &[0; 8]), t).unwrap();
            m.feed(&frame(SETTINGS, ACK, 0, &[]), t).unwrap();
            m.feed(&frame(0x1, 0x4, 1, &[0x82; 20]), t).unwrap(); // HEADERS
            m.feed(&frame(DATA, 0, 1, &[7; 100]), t).unwrap();
            m.feed(&frame(DATA, END_STREAM, 1, &[]), t).unwrap();
            m.feed(&frame(0x8, 0, 0, &[0, 0, 1, 0]), t).unwrap(); // WINDOW_UPDATE
        }
        assert_eq!(m.frames(), 600);
    }

    #[test]
    fn the_allowance_comes_back_with_time() {
        let t = Instant::now();
        let mut m = FrameMeter::new(budget(2, 10), t);
        m.feed(PREFACE, t).unwrap();
        m.feed(&frame(PING, 0, 0, &[0; 8]), t).unwrap();
        m.feed(&frame(PING, 0, 0, &[0; 8]), t).unwrap();
        assert!(m.feed(&frame(PING, 0, 0, &[0; 8]), t).is_err());
        // 10 per second: one more after 100 ms, never more than the burst.
        let later = t + Duration::from_millis(100);
        m.feed(&frame(PING, 0, 0, &[0; 8]), later).unwrap();
        assert!(m.feed(&frame(PING, 0, 0, &[0; 8]), later).is_err());
        let much_later = t + Duration::from_secs(3600);
        m.feed(&frame(PING, 0, 0, &[0; 8]), much_later).unwrap();
        m.feed(&frame(PING, 0, 0, &[0; 8]), much_later).unwrap();
        assert!(m.feed(&frame(PING, 0, 0, &[0; 8]), much_later).is_err());
    }

    #[test]
    fn a_settings_frame_costs_one_per_setting() {
        let t = Instant::now();
        let mut m = FrameMeter::new(budget(10, 1), t);
        m.feed(PREFACE, t).unwrap();
        m.feed(&frame(SETTINGS, 0, 0, &[0; 6 * 10]), t).unwrap();
        assert_eq!(
            m.feed(&frame(SETTINGS, 0, 0, &[0; 6]), t),
            Err(Flood::Settings)
        );
    }

    #[test]
    fn empty_data_frames_that_end_nothing_count() {
        let t = Instant::now();
        let mut m = FrameMeter::new(budget(3, 1), t);
        m.feed(PREFACE, t).unwrap();
        for _ in 0..3 {
            m.feed(&frame(DATA, 0, 1, &[]), t).unwrap();
        }
        assert_eq!(m.feed(&frame(DATA, 0, 1, &[]), t), Err(Flood::EmptyData));
    }

    /// A stream of frames, the flood frames among them, and how many.
    fn frames() -> impl Strategy<Value = (Vec<u8>, usize)> {
        let one = (
            prop_oneof![
                Just(DATA),
                Just(0x1),
                Just(SETTINGS),
                Just(PING),
                Just(0x8),
                any::<u8>()
            ],
            any::<u8>(),
            any::<u32>(),
            prop::collection::vec(any::<u8>(), 0..64),
        );
        prop::collection::vec(one, 0..200).prop_map(|frames| {
            let mut bytes = PREFACE.to_vec();
            let mut charged = 0;
            for (kind, flags, stream, payload) in frames {
                charged += match kind {
                    PING if flags & ACK == 0 => 1,
                    SETTINGS if flags & ACK == 0 => (payload.len() / 6).max(1),
                    DATA if payload.is_empty() && flags & END_STREAM == 0 => 1,
                    _ => 0,
                };
                bytes.extend(frame(kind, flags, stream, &payload));
            }
            (bytes, charged)
        })
    }

    proptest! {
        /// However the bytes are split into reads, the meter sees the same
        /// frames and charges the same.
        #[test]
        fn splitting_reads_changes_nothing(
            (bytes, charged) in frames(),
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..20),
        ) {
            let t = Instant::now();
            let burst = u32::try_from(charged).unwrap();
            // Exactly enough: every frame passes.
            let mut m = FrameMeter::new(budget(burst, 0), t);
            let mut points: Vec<usize> = cuts.iter().map(|i| i.index(bytes.len() + 1)).collect();
            points.sort_unstable();
            let mut at = 0;
            for p in points.into_iter().chain([bytes.len()]) {
                m.feed(&bytes[at..p], t).unwrap();
                at = p;
            }
            // One token short: the last flood frame is refused.
            if charged > 0 {
                let mut m = FrameMeter::new(budget(burst - 1, 0), t);
                prop_assert!(m.feed(&bytes, t).is_err());
            }
        }

        /// Arbitrary bytes never panic and never take unbounded state.
        #[test]
        fn arbitrary_bytes_are_only_counted(bytes in prop::collection::vec(any::<u8>(), 0..4096)) {
            let t = Instant::now();
            let mut m = FrameMeter::new(Budget::default(), t);
            let _ = m.feed(&bytes, t);
            prop_assert!(m.frames() <= bytes.len() as u64 / 9 + 1);
        }
    }
}
