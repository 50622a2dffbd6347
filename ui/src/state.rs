//! What the Status tab's badge and the tray icon say, from the worker's
//! snapshot (or from its absence).

use studio_worker::scheduler::snapshot::Snapshot;

/// The worker's state as the window shows it.
#[derive(Debug, Clone, PartialEq)]
pub enum Badge {
    /// No worker runs with this config.
    NotRunning,
    /// Running but not taking jobs yet (registering, waiting for
    /// approval): why.
    Starting(String),
    /// A session is not connected: which and why.
    Disconnected(String),
    /// Claiming paused after repeated runner failures: why, until when.
    CoolingDown(String),
    /// Not taking offers: by `pause`, `auto_enabled = false` or a drain.
    Paused(String),
    /// A job runs: its kind and model.
    Busy(String),
    /// Connected, taking offers, nothing running.
    Idle,
}

impl Badge {
    /// From the endpoint's answer: `None` when no worker answers, the
    /// snapshot, or the reason it is still starting.
    pub fn of(status: Option<&Result<Snapshot, String>>) -> Self {
        let s = match status {
            None => return Badge::NotRunning,
            Some(Err(why)) => return Badge::Starting(why.clone()),
            Some(Ok(s)) => s,
        };
        if let Some(x) = s.sessions.iter().find(|x| x.state != "connected") {
            let why = x
                .detail
                .as_deref()
                .map(|d| format!(": {d}"))
                .unwrap_or_default();
            return Badge::Disconnected(format!("session {} {}{why}", x.slot, x.state));
        }
        if !s.sessions.is_empty() && s.sessions.iter().all(|x| x.failure_pause.is_some()) {
            let p = s.sessions[0].failure_pause.as_ref();
            return Badge::CoolingDown(p.map_or(String::new(), |p| {
                format!("{} (until {})", p.reason, p.until)
            }));
        }
        if let Some(j) = s.jobs.first() {
            return Badge::Busy(format!("{} on {} ({})", j.kind, j.model, j.phase));
        }
        if s.draining {
            return Badge::Paused("draining: the worker exits once its job is delivered".into());
        }
        if s.control_paused {
            return Badge::Paused(
                "paused from the window or `pause`; resume to take offers".into(),
            );
        }
        if s.operator_paused {
            return Badge::Paused("auto_enabled = false".into());
        }
        Badge::Idle
    }

    /// The badge's word.
    pub fn label(&self) -> &'static str {
        match self {
            Badge::NotRunning => "not running",
            Badge::Starting(_) => "starting",
            Badge::Disconnected(_) => "disconnected",
            Badge::CoolingDown(_) => "cooling down",
            Badge::Paused(_) => "paused",
            Badge::Busy(_) => "busy",
            Badge::Idle => "idle",
        }
    }

    /// The reason shown beside the badge.
    pub fn detail(&self) -> &str {
        match self {
            Badge::Starting(d)
            | Badge::Disconnected(d)
            | Badge::CoolingDown(d)
            | Badge::Paused(d)
            | Badge::Busy(d) => d,
            Badge::NotRunning | Badge::Idle => "",
        }
    }

    /// The tray icon's colour.
    pub fn tray(&self) -> Tray {
        match self {
            Badge::Idle => Tray::Green,
            Badge::Busy(_) | Badge::Paused(_) | Badge::Starting(_) => Tray::Amber,
            Badge::NotRunning | Badge::Disconnected(_) | Badge::CoolingDown(_) => Tray::Red,
        }
    }

    /// Whether the tray's Pause/Resume item should say Resume.
    pub fn resumable(&self) -> bool {
        matches!(self, Badge::Paused(_))
    }
}

/// The tray icon's colour: green idle and taking jobs; amber busy,
/// paused or starting; red when the worker is away, disconnected or
/// cooling down (something needs a look).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tray {
    /// Idle.
    Green,
    /// Working or held.
    Amber,
    /// Needs attention.
    Red,
}

impl Tray {
    /// Its RGB.
    pub fn rgb(self) -> [u8; 3] {
        match self {
            Tray::Green => [0x2e, 0xa0, 0x43],
            Tray::Amber => [0xe0, 0x9b, 0x12],
            Tray::Red => [0xd1, 0x24, 0x2f],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use studio_worker::scheduler::snapshot::{JobStatus, Pause, SessionStatus};

    fn connected() -> Snapshot {
        Snapshot {
            sessions: vec![SessionStatus {
                state: "connected".into(),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn the_tray_is_green_idle_amber_busy_or_held_and_red_when_something_needs_a_look() {
        let idle = connected();
        assert_eq!(Badge::of(Some(&Ok(idle.clone()))), Badge::Idle);
        assert_eq!(Badge::of(Some(&Ok(idle.clone()))).tray(), Tray::Green);

        let mut busy = idle.clone();
        busy.jobs.push(JobStatus {
            kind: "image".into(),
            model: "sdxl".into(),
            phase: "running".into(),
            ..Default::default()
        });
        let b = Badge::of(Some(&Ok(busy.clone())));
        assert_eq!(b, Badge::Busy("image on sdxl (running)".into()));
        assert_eq!(b.tray(), Tray::Amber);

        let mut paused = idle.clone();
        paused.control_paused = true;
        let p = Badge::of(Some(&Ok(paused)));
        assert_eq!(
            (p.label(), p.tray(), p.resumable()),
            ("paused", Tray::Amber, true)
        );

        let mut away = idle.clone();
        away.sessions[0].state = "disconnected".into();
        away.sessions[0].detail = Some("studio unreachable".into());
        let d = Badge::of(Some(&Ok(away)));
        assert_eq!(d.detail(), "session 0 disconnected: studio unreachable");
        assert_eq!(d.tray(), Tray::Red);

        let mut cooling = idle;
        cooling.sessions[0].failure_pause = Some(Pause {
            reason: "runner deaths across 2 models".into(),
            until: "12:00:00".into(),
        });
        assert_eq!(Badge::of(Some(&Ok(cooling))).tray(), Tray::Red);
        // A disconnect outranks a job in flight.
        busy.sessions[0].state = "connecting".into();
        assert_eq!(Badge::of(Some(&Ok(busy))).label(), "disconnected");

        assert_eq!(Badge::of(None).tray(), Tray::Red);
        let starting = Badge::of(Some(&Err("waiting for operator approval".into())));
        assert_eq!(
            (starting.label(), starting.tray()),
            ("starting", Tray::Amber)
        );
        assert!(!Badge::Idle.resumable());
    }
}
