//! whatsip-testkit: deterministic test support for sans-IO cores.
//!
//! - [`VirtualClock`]: an `Instant` that only moves when the test says so.
//! - [`Network`]: an in-memory network between numbered nodes that loses, delays,
//!   duplicates and reorders messages according to a [`LinkConfig`], driven by a
//!   seeded RNG so that every run of a test sees the same fate for every message.
//! - [`Node`] and [`run_until_idle`]: drive any number of cores (SIP transactions,
//!   RTP relays, …) over the network and the clock until nothing is left to do.
//!
//! Nothing here sleeps or reads the system clock except [`VirtualClock::new`], which
//! takes one `Instant` as its epoch (an `Instant` cannot be made any other way).
//!
//! ```
//! use std::time::Duration;
//! use whatsip_testkit::{LinkConfig, Network, NodeId, VirtualClock};
//!
//! let mut clock = VirtualClock::new();
//! let mut net: Network<&str> = Network::new(7, LinkConfig::delay(Duration::from_millis(20)));
//! net.send(clock.now(), NodeId(0), NodeId(1), "hello");
//! assert!(net.poll_delivery(clock.now()).is_none());
//! clock.advance(Duration::from_millis(20));
//! let d = net.poll_delivery(clock.now()).unwrap();
//! assert_eq!((d.from, d.to, d.msg), (NodeId(0), NodeId(1), "hello"));
//! ```

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// A clock that moves only when told to.
#[derive(Debug, Clone)]
pub struct VirtualClock {
    epoch: Instant,
    now: Instant,
}

impl VirtualClock {
    /// A clock whose epoch (time zero) is an arbitrary real `Instant`.
    #[allow(clippy::disallowed_methods)] // the one place an Instant is minted
    pub fn new() -> Self {
        let epoch = Instant::now();
        Self { epoch, now: epoch }
    }

    /// The current virtual time.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// Time zero.
    pub fn epoch(&self) -> Instant {
        self.epoch
    }

    /// The instant `secs` seconds after the epoch.
    pub fn at(&self, secs: f64) -> Instant {
        self.epoch + Duration::from_secs_f64(secs)
    }

    /// Time elapsed since the epoch.
    pub fn elapsed(&self) -> Duration {
        self.now - self.epoch
    }

    /// Seconds since the epoch, as `f64` (handy in assertions on schedules).
    pub fn secs(&self, t: Instant) -> f64 {
        t.saturating_duration_since(self.epoch).as_secs_f64()
    }

    /// Moves the clock forward by `d`.
    pub fn advance(&mut self, d: Duration) {
        self.now += d;
    }

    /// Moves the clock to `t` if `t` is later than now.
    pub fn advance_to(&mut self, t: Instant) {
        if t > self.now {
            self.now = t;
        }
    }
}

impl Default for VirtualClock {
    fn default() -> Self {
        Self::new()
    }
}

/// A node's address on the in-memory network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub usize);

/// How a link treats messages.
#[derive(Debug, Clone, PartialEq)]
pub struct LinkConfig {
    /// Probability in 0..=1 that a message is lost.
    pub loss: f64,
    /// Probability in 0..=1 that a delivered message is delivered twice.
    pub duplicate: f64,
    /// Smallest one-way delay.
    pub delay_min: Duration,
    /// Largest one-way delay; a range wider than zero reorders messages.
    pub delay_max: Duration,
}

impl LinkConfig {
    /// A perfect link delivering after `delay`.
    pub fn delay(delay: Duration) -> Self {
        Self {
            loss: 0.0,
            duplicate: 0.0,
            delay_min: delay,
            delay_max: delay,
        }
    }

    /// A perfect link delivering instantly.
    pub fn perfect() -> Self {
        Self::delay(Duration::ZERO)
    }

    /// Sets the loss probability (builder style).
    pub fn with_loss(mut self, loss: f64) -> Self {
        self.loss = loss;
        self
    }

    /// Sets the duplication probability (builder style).
    pub fn with_duplicate(mut self, p: f64) -> Self {
        self.duplicate = p;
        self
    }

    /// Sets a random delay in `min..=max`, which reorders messages (builder style).
    pub fn with_jitter(mut self, min: Duration, max: Duration) -> Self {
        self.delay_min = min;
        self.delay_max = max.max(min);
        self
    }
}

impl Default for LinkConfig {
    fn default() -> Self {
        Self::perfect()
    }
}

/// A message coming out of the network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery<M> {
    /// Sender.
    pub from: NodeId,
    /// Receiver.
    pub to: NodeId,
    /// The message.
    pub msg: M,
}

/// Counters of what the network did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetStats {
    /// Messages handed to [`Network::send`].
    pub sent: u64,
    /// Messages lost (randomly or by [`Network::drop_next`]).
    pub lost: u64,
    /// Extra copies created.
    pub duplicated: u64,
    /// Messages handed out by [`Network::poll_delivery`].
    pub delivered: u64,
}

struct InFlight<M> {
    at: Instant,
    seq: u64,
    delivery: Delivery<M>,
}

impl<M> PartialEq for InFlight<M> {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl<M> Eq for InFlight<M> {}
impl<M> PartialOrd for InFlight<M> {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl<M> Ord for InFlight<M> {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(o.at, o.seq))
    }
}

/// A seeded in-memory network. Every random decision comes from one ChaCha8 RNG seeded
/// at construction, so a test replays identically.
pub struct Network<M> {
    rng: ChaCha8Rng,
    default_link: LinkConfig,
    links: HashMap<(NodeId, NodeId), LinkConfig>,
    scripted_drops: HashMap<(NodeId, NodeId), u32>,
    queue: BinaryHeap<Reverse<InFlight<M>>>,
    seq: u64,
    stats: NetStats,
}

impl<M: Clone> Network<M> {
    /// A network whose links all behave like `default_link`.
    pub fn new(seed: u64, default_link: LinkConfig) -> Self {
        Self {
            rng: ChaCha8Rng::seed_from_u64(seed),
            default_link,
            links: HashMap::new(),
            scripted_drops: HashMap::new(),
            queue: BinaryHeap::new(),
            seq: 0,
            stats: NetStats::default(),
        }
    }

    /// Overrides the behaviour of the one-way link `from → to`.
    pub fn set_link(&mut self, from: NodeId, to: NodeId, cfg: LinkConfig) {
        self.links.insert((from, to), cfg);
    }

    /// Loses the next `n` messages sent `from → to`, whatever the link config says.
    pub fn drop_next(&mut self, from: NodeId, to: NodeId, n: u32) {
        *self.scripted_drops.entry((from, to)).or_default() += n;
    }

    /// Sends `msg`; its fate (loss, delay, duplicate) is decided now.
    pub fn send(&mut self, now: Instant, from: NodeId, to: NodeId, msg: M) {
        self.stats.sent += 1;
        if let Some(n) = self.scripted_drops.get_mut(&(from, to))
            && *n > 0
        {
            *n -= 1;
            self.stats.lost += 1;
            return;
        }
        let cfg = self
            .links
            .get(&(from, to))
            .unwrap_or(&self.default_link)
            .clone();
        if cfg.loss > 0.0 && self.rng.random::<f64>() < cfg.loss {
            self.stats.lost += 1;
            return;
        }
        let copies = if cfg.duplicate > 0.0 && self.rng.random::<f64>() < cfg.duplicate {
            self.stats.duplicated += 1;
            2
        } else {
            1
        };
        for _ in 0..copies {
            let delay = if cfg.delay_max > cfg.delay_min {
                let span = (cfg.delay_max - cfg.delay_min).as_nanos() as u64;
                cfg.delay_min + Duration::from_nanos(self.rng.random_range(0..=span))
            } else {
                cfg.delay_min
            };
            self.seq += 1;
            self.queue.push(Reverse(InFlight {
                at: now + delay,
                seq: self.seq,
                delivery: Delivery {
                    from,
                    to,
                    msg: msg.clone(),
                },
            }));
        }
    }

    /// The next message due at or before `now`, earliest first.
    pub fn poll_delivery(&mut self, now: Instant) -> Option<Delivery<M>> {
        if self.queue.peek().is_some_and(|Reverse(f)| f.at <= now) {
            self.stats.delivered += 1;
            return self.queue.pop().map(|Reverse(f)| f.delivery);
        }
        None
    }

    /// When the next message is due.
    pub fn next_delivery(&self) -> Option<Instant> {
        self.queue.peek().map(|Reverse(f)| f.at)
    }

    /// Messages still in flight.
    pub fn in_flight(&self) -> usize {
        self.queue.len()
    }

    /// What happened so far.
    pub fn stats(&self) -> NetStats {
        self.stats
    }

    /// A random number from the network's RNG (for tests needing more randomness on
    /// the same seed).
    pub fn rng(&mut self) -> &mut ChaCha8Rng {
        &mut self.rng
    }
}

/// A sans-IO core as [`run_until_idle`] sees it.
pub trait Node<M> {
    /// A message arrived from `from`.
    fn handle_message(&mut self, from: NodeId, msg: M, now: Instant);
    /// The earliest timer deadline, if any.
    fn poll_timeout(&self) -> Option<Instant>;
    /// Timers due at `now` fire.
    fn handle_timeout(&mut self, now: Instant);
    /// The next message to send and its destination.
    fn poll_transmit(&mut self) -> Option<(NodeId, M)>;
}

/// What [`run_until_idle`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunReport {
    /// Steps taken (each one a clock advance).
    pub steps: usize,
    /// Whether it stopped because nothing was left to do (rather than at `until` or
    /// the step bound).
    pub idle: bool,
}

/// Runs `nodes` (node `i` is `NodeId(i)`) over `net`: drains their transmits into the
/// network, then advances `clock` to the earliest delivery or timer, delivers and
/// fires, and repeats until nothing is pending, `until` is reached, or `max_steps`
/// steps were taken (every loop is bounded).
pub fn run_until_idle<M: Clone>(
    clock: &mut VirtualClock,
    net: &mut Network<M>,
    nodes: &mut [&mut dyn Node<M>],
    until: Instant,
    max_steps: usize,
) -> RunReport {
    for step in 0..max_steps {
        let now = clock.now();
        for (i, node) in nodes.iter_mut().enumerate() {
            while let Some((to, msg)) = node.poll_transmit() {
                net.send(now, NodeId(i), to, msg);
            }
        }
        let next_timer = nodes.iter().filter_map(|n| n.poll_timeout()).min();
        let next = match (next_timer, net.next_delivery()) {
            (Some(a), Some(b)) => a.min(b),
            (Some(a), None) | (None, Some(a)) => a,
            (None, None) => {
                return RunReport {
                    steps: step,
                    idle: true,
                };
            }
        };
        if next > until {
            clock.advance_to(until);
            return RunReport {
                steps: step,
                idle: false,
            };
        }
        clock.advance_to(next);
        let now = clock.now();
        while let Some(d) = net.poll_delivery(now) {
            if let Some(node) = nodes.get_mut(d.to.0) {
                node.handle_message(d.from, d.msg, now);
            }
        }
        for node in nodes.iter_mut() {
            if node.poll_timeout().is_some_and(|t| t <= now) {
                node.handle_timeout(now);
            }
        }
    }
    RunReport {
        steps: max_steps,
        idle: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_fate() {
        let clock = VirtualClock::new();
        let cfg = LinkConfig::perfect()
            .with_loss(0.3)
            .with_duplicate(0.2)
            .with_jitter(Duration::from_millis(1), Duration::from_millis(50));
        let run = |seed| {
            let mut net = Network::new(seed, cfg.clone());
            for i in 0..200u32 {
                net.send(clock.now(), NodeId(0), NodeId(1), i);
            }
            let mut out = Vec::new();
            while let Some(d) = net.poll_delivery(clock.at(1.0)) {
                out.push(d.msg);
            }
            (out, net.stats())
        };
        let (a, sa) = run(42);
        let (b, sb) = run(42);
        assert_eq!(a, b);
        assert_eq!(sa, sb);
        assert!(sa.lost > 30 && sa.lost < 100, "lost {}", sa.lost);
        assert!(sa.duplicated > 10);
        // jitter reorders
        assert!(a.windows(2).any(|w| w[0] > w[1]));
        assert_eq!(a.len() as u64, sa.delivered);
        assert_eq!(sa.sent - sa.lost + sa.duplicated, sa.delivered);
    }

    #[test]
    fn scripted_drops_hit_only_their_link() {
        let clock = VirtualClock::new();
        let mut net = Network::new(1, LinkConfig::perfect());
        net.drop_next(NodeId(0), NodeId(1), 2);
        for i in 0..3 {
            net.send(clock.now(), NodeId(0), NodeId(1), i);
            net.send(clock.now(), NodeId(1), NodeId(0), 10 + i);
        }
        let mut got = Vec::new();
        while let Some(d) = net.poll_delivery(clock.now()) {
            got.push(d.msg);
        }
        got.sort_unstable();
        assert_eq!(got, vec![2, 10, 11, 12]);
    }

    struct Pinger {
        peer: NodeId,
        left: u32,
        timer: Option<Instant>,
        got: Vec<(u32, Instant)>,
        out: Vec<(NodeId, u32)>,
    }

    impl Node<u32> for Pinger {
        fn handle_message(&mut self, _from: NodeId, msg: u32, now: Instant) {
            self.got.push((msg, now));
        }
        fn poll_timeout(&self) -> Option<Instant> {
            self.timer
        }
        fn handle_timeout(&mut self, now: Instant) {
            self.out.push((self.peer, self.left));
            self.left -= 1;
            self.timer = (self.left > 0).then(|| now + Duration::from_secs(1));
        }
        fn poll_transmit(&mut self) -> Option<(NodeId, u32)> {
            self.out.pop()
        }
    }

    #[test]
    fn run_until_idle_fires_timers_and_delivers_in_virtual_time() {
        let mut clock = VirtualClock::new();
        let mut net = Network::new(3, LinkConfig::delay(Duration::from_millis(100)));
        let mut a = Pinger {
            peer: NodeId(1),
            left: 3,
            timer: Some(clock.at(0.5)),
            got: vec![],
            out: vec![],
        };
        let mut b = Pinger {
            peer: NodeId(0),
            left: 0,
            timer: None,
            got: vec![],
            out: vec![],
        };
        let until = clock.at(60.0);
        let r = run_until_idle(&mut clock, &mut net, &mut [&mut a, &mut b], until, 100);
        assert!(r.idle);
        let times: Vec<f64> = b.got.iter().map(|(_, t)| clock.secs(*t)).collect();
        assert_eq!(
            b.got.iter().map(|(m, _)| *m).collect::<Vec<_>>(),
            vec![3, 2, 1]
        );
        for (t, want) in times.iter().zip([0.6, 1.6, 2.6]) {
            assert!((t - want).abs() < 1e-6, "{t} vs {want}");
        }
    }
}
