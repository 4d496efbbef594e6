//! `CarbonMonitor` (actix): follows the grid's carbon intensity and tells
//! the power governor.
//!
//! Sources (policy `carbon`, or `ecomap run --carbon-trace`):
//! - `Trace`: a CSV replayed at `speedup` trace seconds per run second,
//!   from `start_offset`, starting when the monitor starts (just before the
//!   first release, after models are loaded); rows the trace marks stale
//!   (held over an empty row) are passed on as stale;
//! - `Http`: a live provider polled on its own thread (blocking HTTP never
//!   stalls the actix arbiter); errors are logged and counted, never fatal;
//! - `Fixed`: a constant.

use crate::carbon_http::{ProviderClient, ProviderError, ProviderReading};
use crate::clock::RunClock;
use crate::control_plane::ControlShared;
use actix::prelude::*;
use ecomap::carbon::CarbonTrace;
use ecomap::time::Timestamp;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// One intensity observation.
#[derive(Debug, Clone, Copy, PartialEq, Message)]
#[rtype(result = "()")]
pub struct CarbonReading {
    /// gCO2eq/kWh.
    pub gco2_per_kwh: f64,
    /// Run time it was observed.
    pub observed: Timestamp,
    /// Where it falls on the grid's clock, from the monitor's start: the
    /// trace position in a replay (sped up), run time otherwise. The
    /// planner's trailing mean runs on it (`ecomap::planner::CarbonPricer`).
    pub grid_time: Duration,
    /// The source itself marks it stale (a held value).
    pub stale: bool,
}

/// Where readings come from.
pub enum MonitorSource {
    /// A constant.
    Fixed(f64),
    /// A trace replay.
    Trace {
        /// The trace.
        trace: CarbonTrace,
        /// Trace seconds per run second.
        speedup: f64,
        /// Trace position at run time zero.
        start_offset: Duration,
    },
    /// A live provider.
    Http {
        /// The client.
        client: ProviderClient,
        /// Poll period (run time).
        poll: Duration,
        /// A figure whose period ended longer ago than this is stale when
        /// it arrives (the control plane's pricing staleness: the
        /// governor's `max_staleness` where there is a governor).
        max_age: Duration,
    },
}

/// The carbon monitor actor.
pub struct CarbonMonitor {
    source: Option<MonitorSource>,
    governor: Recipient<CarbonReading>,
    clock: RunClock,
    tick: Duration,
    stop: Arc<AtomicBool>,
    shared: Arc<ControlShared>,
    /// Run time at which a trace replay starts (its `start_offset`): the
    /// monitor's start, so model loading does not eat into the trace.
    origin: Timestamp,
}

impl CarbonMonitor {
    /// A monitor sending readings to `governor`; trace and fixed sources
    /// are sampled every `tick` of run time. Provider errors are noted in `shared`.
    pub fn new(
        source: MonitorSource,
        governor: Recipient<CarbonReading>,
        clock: RunClock,
        tick: Duration,
        shared: Arc<ControlShared>,
    ) -> Self {
        CarbonMonitor {
            source: Some(source),
            governor,
            clock,
            tick,
            stop: Arc::new(AtomicBool::new(false)),
            shared,
            origin: clock.now(),
        }
    }

    fn sample(&self) -> Option<CarbonReading> {
        let now = self.clock.now();
        match self.source.as_ref()? {
            MonitorSource::Fixed(g) => Some(CarbonReading {
                gco2_per_kwh: *g,
                observed: now,
                grid_time: now.saturating_since(self.origin),
                stale: false,
            }),
            MonitorSource::Trace {
                trace,
                speedup,
                start_offset,
            } => {
                let elapsed = now.saturating_since(self.origin);
                // Saturating: an absurd speedup holds the last sample
                // instead of overflowing the clock.
                let offset = Duration::try_from_secs_f64(elapsed.as_secs_f64() * *speedup)
                    .unwrap_or(Duration::MAX)
                    .saturating_add(*start_offset);
                let s = trace.sample_at(offset);
                Some(CarbonReading {
                    gco2_per_kwh: s.gco2_per_kwh,
                    observed: now,
                    grid_time: offset.saturating_sub(*start_offset),
                    stale: s.stale,
                })
            }
            MonitorSource::Http { .. } => None,
        }
    }
}

impl Actor for CarbonMonitor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        if let Some(MonitorSource::Http { .. }) = &self.source {
            let Some(MonitorSource::Http {
                client,
                poll,
                max_age,
            }) = self.source.take()
            else {
                return;
            };
            // The poller holds this actor's address, which keeps the actor
            // alive until the system stops (then `stopped` ends the poller).
            let me = ctx.address();
            let clock = self.clock;
            let stop = self.stop.clone();
            // Blocking HTTP on its own thread; answers come back as messages.
            let spawned = std::thread::Builder::new()
                .name("carbon-http".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        let started = clock.now();
                        let result = client.fetch_with_retries(3, Duration::from_millis(500));
                        let age = match &result {
                            Ok(r) => r.age_at(chrono::Utc::now()),
                            Err(_) => Duration::ZERO,
                        };
                        me.do_send(ProviderAnswer {
                            result,
                            age,
                            max_age,
                            observed: clock.now(),
                        });
                        // Sleep out the poll period in small steps so a stop is prompt.
                        let next = started + poll;
                        while clock.now() < next && !stop.load(Ordering::Relaxed) {
                            std::thread::sleep(Duration::from_millis(20));
                        }
                    }
                });
            if let Err(e) = spawned {
                // No reading will come: the governor falls back after its
                // grace, and the report says why.
                tracing::warn!("carbon monitor: cannot start the HTTP poller: {e}");
                self.shared
                    .note(format!("carbon monitor: cannot start the HTTP poller: {e}"));
            }
            return;
        }
        if let Some(r) = self.sample() {
            self.governor.do_send(r);
        }
        ctx.run_interval(self.tick, |act, _| {
            if let Some(r) = act.sample() {
                act.governor.do_send(r);
            }
        });
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// What one poll of a live provider gave.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct ProviderAnswer {
    /// The figure, or every attempt's error.
    pub result: Result<ProviderReading, ProviderError>,
    /// How long ago the figure's period had ended when it was read
    /// ([`ProviderReading::age_at`] on the wall clock).
    pub age: Duration,
    /// Older than this, the figure is stale on arrival.
    pub max_age: Duration,
    /// When the poll ended (run time).
    pub observed: Timestamp,
}

impl Handler<ProviderAnswer> for CarbonMonitor {
    type Result = ();

    fn handle(&mut self, msg: ProviderAnswer, _ctx: &mut Self::Context) {
        match msg.result {
            Ok(r) => {
                // An old figure is dated back by its age, so the governor
                // and the pricing see it age from when its period ended
                // (clipped at the run's start: a figure older than the run
                // is dated to it, and goes stale by the flag below).
                let stale = msg.age > msg.max_age;
                if stale {
                    let what = format!(
                        "carbon monitor: the provider's figure ended {:.0} min before it was \
                         read (more than the {:.0} min allowed); treated as stale",
                        msg.age.as_secs_f64() / 60.0,
                        msg.max_age.as_secs_f64() / 60.0
                    );
                    tracing::warn!("{what}");
                    self.shared.note(
                        "carbon monitor: the live provider answered with a figure older than \
                         the staleness allowed; treated as stale"
                            .into(),
                    );
                }
                let observed = msg.observed - msg.age;
                self.governor.do_send(CarbonReading {
                    gco2_per_kwh: r.gco2_per_kwh,
                    observed,
                    grid_time: observed.saturating_since(self.origin),
                    stale,
                })
            }
            Err(e) => {
                // Never fatal: the governor sees the intensity go stale and
                // falls back to its conservative cap.
                tracing::warn!("carbon monitor: {e}");
                self.shared.note(format!("provider error: {e}"));
            }
        }
    }
}

impl Drop for CarbonMonitor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
