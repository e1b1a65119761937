//! A TCP proxy that sits between callers and one target instance and breaks the wire on
//! purpose (SPEC section 13), after Toxiproxy's design: every accepted connection gets its own
//! upstream connection and two pipes (up: caller to target, down: target to caller), and each
//! chunk read from one side passes through the active toxics before it is written to the other.
//!
//! - [`toxic`]: the toxics, their directions and parameter parsers
//! - [`Proxy`]: one listener; its toxics and upstream can change while it runs, and dropping it
//!   closes the listener and every connection through it
//!
//! Toxicity is decided once per connection (a connection is either affected or not, as in
//! Toxiproxy): a number drawn in `[0, 100)` from the proxy's random source, seeded by `--seed`
//! so that the same seed affects the same connections in the same order, and the jitter of
//! each connection comes from the same source. A fault applied to a running proxy with a seed
//! seeds it afresh ([`Proxy::reseed`]), so the sequence is the same whatever ran before.
//!
//! As in Toxiproxy, a toxic added to a running proxy acts on the connections already open
//! too: callers keep pooled connections, and a fault that only new ones saw would never show
//! under steady traffic. A reset or a blackhole's close counts its time from when it came.

pub mod toxic;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

pub use toxic::{Direction, Toxic, ToxicKind, ToxicSpec};

/// What every connection of a proxy reads on each chunk, so a change applies at once.
#[derive(Clone, Debug)]
struct Shared {
    toxics: Arc<Vec<ToxicSpec>>,
    upstream: SocketAddr,
    /// The latest seed given by [`Proxy::reseed`], numbered so the same seed twice counts.
    reseed: Option<(u64, u64)>,
}

/// One running proxy. Dropping it aborts the accept loop, which owns every connection task, so
/// nothing it relayed outlives it.
pub struct Proxy {
    address: SocketAddr,
    state: watch::Sender<Shared>,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy").field("address", &self.address).field("state", &*self.state.borrow()).finish()
    }
}

impl Proxy {
    /// Listens on a free loopback port and relays to `upstream` through `toxics`.
    pub async fn start(upstream: SocketAddr, toxics: Vec<ToxicSpec>, seed: Option<u64>) -> std::io::Result<Proxy> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let address = listener.local_addr()?;
        let (state, rx) = watch::channel(Shared { toxics: Arc::new(toxics), upstream, reseed: None });
        let rng = match seed {
            Some(s) => StdRng::seed_from_u64(s),
            None => StdRng::from_entropy(),
        };
        let task = tokio::spawn(accept_loop(listener, rx, rng));
        Ok(Proxy { address, state, task })
    }

    /// Where callers connect.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    pub fn upstream(&self) -> SocketAddr {
        self.state.borrow().upstream
    }

    pub fn toxics(&self) -> Vec<ToxicSpec> {
        self.state.borrow().toxics.as_ref().clone()
    }

    /// Replaces the toxics; chunks read from now on see the new set.
    pub fn set_toxics(&self, toxics: Vec<ToxicSpec>) {
        self.state.send_modify(|s| s.toxics = Arc::new(toxics));
    }

    /// Starts the random source again from `seed`: the connections accepted from now on draw
    /// the same toxicity and jitter as on a fresh proxy with that seed.
    pub fn reseed(&self, seed: u64) {
        self.state.send_modify(|s| {
            let epoch = s.reseed.map_or(1, |(epoch, _)| epoch + 1);
            s.reseed = Some((epoch, seed));
        });
    }

    /// Points new connections at another address (the target restarted on a new port).
    pub fn set_upstream(&self, upstream: SocketAddr) {
        self.state.send_if_modified(|s| {
            let changed = s.upstream != upstream;
            s.upstream = upstream;
            changed
        });
    }

    /// Ends the proxy gently: it relays clean bytes for `drain` (callers that have not yet
    /// refreshed their discovery view still reach the target, and calls in flight finish),
    /// then closes.
    pub fn retire(self, drain: Duration) {
        self.set_toxics(Vec::new());
        tokio::spawn(async move {
            tokio::time::sleep(drain).await;
            drop(self);
        });
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept_loop(listener: TcpListener, state: watch::Receiver<Shared>, mut rng: StdRng) {
    // Dropped with this task: aborting the loop aborts every connection.
    let mut conns = JoinSet::new();
    let mut seeded = 0;
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((socket, _)) => {
                    if let Some((epoch, seed)) = state.borrow().reseed {
                        if epoch != seeded {
                            (seeded, rng) = (epoch, StdRng::seed_from_u64(seed));
                        }
                    }
                    let lottery: f64 = rng.gen_range(0.0..100.0);
                    let seed: u64 = rng.gen();
                    conns.spawn(connection(socket, state.clone(), lottery, seed));
                }
                Err(e) => {
                    // Out of descriptors, most likely: wait rather than spin.
                    tracing::warn!(error = %e, "proxy could not accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

/// How a pipe or a connection ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    /// The source closed; the close was passed on.
    Eof,
    /// The whole connection must close now (an error, or limit-data reached).
    Close,
    /// The connection must be reset.
    Reset(Direction),
}

/// The toxics that act on this connection (it drew `lottery`) for bytes flowing in `flow`.
fn active(state: &watch::Receiver<Shared>, lottery: f64, flow: Direction) -> Vec<Toxic> {
    let shared = state.borrow();
    shared.toxics.iter().filter(|t| lottery < t.toxicity && t.direction.covers(flow)).map(|t| t.toxic.clone()).collect()
}

/// The connection-wide toxics that act on a connection that drew `lottery`: a reset (after
/// how long, which way) and the soonest close of a blackhole.
fn connection_wide(toxics: &[ToxicSpec], lottery: f64) -> (Option<(u64, Direction)>, Option<u64>) {
    let applies = |t: &&ToxicSpec| lottery < t.toxicity;
    let reset = toxics.iter().filter(applies).find_map(|t| match t.toxic {
        Toxic::Reset { after_ms } => Some((after_ms, t.direction)),
        _ => None,
    });
    let close_after = toxics
        .iter()
        .filter(applies)
        .filter_map(|t| match t.toxic {
            Toxic::Blackhole { close_after_ms } => close_after_ms,
            _ => None,
        })
        .min();
    (reset, close_after)
}

/// A connection-wide toxic's timer: its setting, and when it fires.
#[derive(Clone, Copy)]
struct Timer<T> {
    what: T,
    at: tokio::time::Instant,
}

impl<T: PartialEq + Copy> Timer<T> {
    /// The timer for `wanted` (the toxic's setting now, and its delay in ms), keeping
    /// `current` if the setting did not change, so a change elsewhere in the set does not
    /// restart its clock.
    fn follow(current: Option<Timer<T>>, wanted: Option<(T, u64)>) -> Option<Timer<T>> {
        match (current, wanted) {
            (Some(timer), Some((what, _))) if timer.what == what => Some(timer),
            (_, Some((what, ms))) => Some(Timer { what, at: tokio::time::Instant::now() + Duration::from_millis(ms) }),
            (_, None) => None,
        }
    }
}

/// Resolves to the timer's setting when it fires; never without a timer.
async fn fire<T: Copy>(timer: Option<Timer<T>>) -> T {
    match timer {
        Some(t) => {
            tokio::time::sleep_until(t.at).await;
            t.what
        }
        None => std::future::pending().await,
    }
}

async fn connection(mut client: TcpStream, mut state: watch::Receiver<Shared>, lottery: f64, seed: u64) {
    let (upstream, at_open) = {
        let s = state.borrow_and_update();
        (s.upstream, s.toxics.clone())
    };
    let (reset, close_after) = connection_wide(&at_open, lottery);
    // Keyed by the toxic's own setting, so the clock restarts only when that setting changes.
    let mut reset_timer = Timer::follow(None, reset.map(|(ms, dir)| ((ms, dir), ms)));
    let mut close_timer = Timer::follow(None, close_after.map(|ms| (ms, ms)));
    let Ok(mut server) = TcpStream::connect(upstream).await else {
        // The caller sees the refusal as a closed connection, as with Toxiproxy.
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let end = {
        let (mut cr, mut cw) = client.split();
        let (mut sr, mut sw) = server.split();
        let up = pipe(&mut cr, &mut sw, Direction::Up, state.clone(), lottery, seed);
        let down = pipe(&mut sr, &mut cw, Direction::Down, state.clone(), lottery, seed.rotate_left(17) ^ 1);
        tokio::pin!(up, down);
        let (mut up_done, mut down_done) = (false, false);
        let mut watching = true;
        loop {
            // A reset after 0 ms acts before a single byte is relayed: a timer of zero still
            // waits for the next tick of tokio's millisecond wheel, and by then a fast target
            // has answered and the whole exchange has passed (the toxic would do nothing).
            if let Some(Timer { what: (0, dir), .. }) = reset_timer {
                break End::Reset(dir);
            }
            // Biased, timers first: a reset or close that is due wins over bytes that are ready.
            let end = tokio::select! {
                biased;
                (_, dir) = fire(reset_timer) => End::Reset(dir),
                _ = fire(close_timer) => End::Close,
                changed = state.changed(), if watching => {
                    // The proxy is going away (its sender dropped): keep relaying as it was.
                    watching = changed.is_ok();
                    let toxics = state.borrow_and_update().toxics.clone();
                    let (reset, close_after) = connection_wide(&toxics, lottery);
                    reset_timer = Timer::follow(reset_timer, reset.map(|(ms, dir)| ((ms, dir), ms)));
                    close_timer = Timer::follow(close_timer, close_after.map(|ms| (ms, ms)));
                    continue;
                }
                end = &mut up, if !up_done => { up_done = true; end }
                end = &mut down, if !down_done => { down_done = true; end }
            };
            if end != End::Eof || (up_done && down_done) {
                break end;
            }
        }
    };
    if let End::Reset(dir) = end {
        // SO_LINGER 0: closing sends RST instead of FIN, so the peer sees "connection reset".
        if dir.covers(Direction::Down) {
            let _ = socket_zero_linger(&client);
        }
        if dir.covers(Direction::Up) {
            let _ = socket_zero_linger(&server);
        }
    }
    drop(client);
    drop(server);
}

#[allow(deprecated)] // `set_linger` is deprecated only because it can block on close; 0 cannot.
fn socket_zero_linger(s: &TcpStream) -> std::io::Result<()> {
    s.set_linger(Some(Duration::ZERO))
}

/// What the reading half of a pipe hands to the writing half.
enum Read {
    /// Bytes, and when they were read: a latency toxic delays each chunk from its arrival.
    Chunk(tokio::time::Instant, Vec<u8>),
    /// The source closed.
    Eof,
    /// Reading failed.
    Failed,
}

/// How many chunks a pipe holds between its halves (at most 32 KiB each): enough that a
/// delayed stream keeps arriving while earlier chunks wait, bounded so a blocked writer
/// pushes back on the source as a real link does.
const PIPE_CHUNKS: usize = 16;

/// Relays `src` to `dst` through the toxics for `flow` until `src` closes.
///
/// Reading and writing are two halves joined by a bounded queue, as in Toxiproxy: the reader
/// stamps each chunk when it arrives and the writer applies the toxics. A latency of 300 ms
/// therefore shifts a stream by 300 ms, rather than adding 300 ms per chunk, which is what a
/// slow link does.
async fn pipe<R, W>(
    src: &mut R,
    dst: &mut W,
    flow: Direction,
    state: watch::Receiver<Shared>,
    lottery: f64,
    seed: u64,
) -> End
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let (tx, mut rx) = tokio::sync::mpsc::channel(PIPE_CHUNKS);
    let reader = async move {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            let read = match src.read(&mut buf).await {
                Ok(0) => Read::Eof,
                Ok(n) => Read::Chunk(tokio::time::Instant::now(), buf[..n].to_vec()),
                Err(_) => Read::Failed,
            };
            let last = !matches!(read, Read::Chunk(..));
            if tx.send(read).await.is_err() || last {
                // The writer ends the pipe; this half only waits for it.
                return std::future::pending::<End>().await;
            }
        }
    };
    let writer = async move {
        let mut state = state;
        let mut rng = StdRng::seed_from_u64(seed);
        let mut passed: u64 = 0;
        loop {
            let (read_at, bytes) = match rx.recv().await {
                Some(Read::Chunk(at, bytes)) => (at, bytes),
                Some(Read::Eof) => {
                    let delay = active(&state, lottery, flow).iter().find_map(|t| match t {
                        Toxic::SlowClose { delay_ms } => Some(*delay_ms),
                        _ => None,
                    });
                    if let Some(ms) = delay {
                        tokio::time::sleep(Duration::from_millis(ms)).await;
                    }
                    let _ = dst.shutdown().await;
                    return End::Eof;
                }
                Some(Read::Failed) | None => return End::Close,
            };
            let mut toxics = active(&state, lottery, flow);
            while toxics.iter().any(|t| matches!(t, Toxic::Blackhole { .. })) {
                // Held, not dropped: the other side waits for bytes that do not come while the
                // fault lasts, and gets them when it ends, as over a cut link that comes back
                // (TCP sends the segments again). A caller that gave up has closed by then.
                if state.changed().await.is_err() {
                    return End::Close;
                }
                toxics = active(&state, lottery, flow);
            }
            let mut chunk = &bytes[..];
            let mut stop_after = false;
            if let Some(limit) = toxics.iter().find_map(|t| match t {
                Toxic::LimitData { bytes } => Some(*bytes),
                _ => None,
            }) {
                let room = limit.saturating_sub(passed);
                if chunk.len() as u64 >= room {
                    chunk = &chunk[..room as usize];
                    stop_after = true;
                }
            }
            // Counted from the chunk's arrival, so time it spent queued behind earlier chunks
            // counts toward its own delay; two latency toxics (a caller's and everyone's) add.
            let mut due = read_at;
            for t in &toxics {
                if let Toxic::Latency { delay_ms, jitter_ms } = t {
                    let jitter =
                        if *jitter_ms > 0 { rng.gen_range(-(*jitter_ms as i64)..=*jitter_ms as i64) } else { 0 };
                    due += Duration::from_millis((*delay_ms as i64 + jitter).max(0) as u64);
                }
            }
            if due > read_at {
                tokio::time::sleep_until(due).await;
            }
            let slicer = toxics.iter().find_map(|t| match t {
                Toxic::Slicer { size, variation, delay_ms } => Some((*size, *variation, *delay_ms)),
                _ => None,
            });
            let rate = toxics.iter().find_map(|t| match t {
                Toxic::Bandwidth { bytes_per_s } => Some(*bytes_per_s),
                _ => None,
            });
            let written = if slicer.is_none() && rate.is_none() {
                dst.write_all(chunk).await.map(|_| chunk.len())
            } else {
                write_paced(dst, chunk, slicer, rate, &mut rng).await
            };
            match written {
                Ok(w) => passed += w as u64,
                Err(_) => return End::Close,
            }
            if stop_after {
                let _ = dst.flush().await;
                return End::Close;
            }
        }
    };
    tokio::select! {
        end = writer => end,
        end = reader => end,
    }
}

/// Writes `chunk` in slices: of the slicer's size (± variation) with its delay between them,
/// and no faster than `rate` bytes per second (slices of a tenth of a second's worth).
async fn write_paced<W: AsyncWrite + Unpin>(
    dst: &mut W,
    chunk: &[u8],
    slicer: Option<(u64, u64, u64)>,
    rate: Option<u64>,
    rng: &mut StdRng,
) -> std::io::Result<usize> {
    let mut rest = chunk;
    while !rest.is_empty() {
        let mut len = match slicer {
            Some((size, variation, _)) => {
                let v = if variation > 0 { rng.gen_range(-(variation as i64)..=variation as i64) } else { 0 };
                (size as i64 + v).max(1) as usize
            }
            None => usize::MAX,
        };
        if let Some(rate) = rate {
            len = len.min((rate / 10).max(1) as usize);
        }
        let len = len.min(rest.len());
        dst.write_all(&rest[..len]).await?;
        dst.flush().await?;
        rest = &rest[len..];
        let mut wait = Duration::ZERO;
        if let Some((_, _, delay_ms)) = slicer {
            wait += Duration::from_millis(delay_ms);
        }
        if let Some(rate) = rate {
            wait += Duration::from_secs_f64(len as f64 / rate as f64);
        }
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
    Ok(chunk.len())
}
