//! The window (the `ui` feature): five tabs drawn from what a background
//! thread last read from the running worker. Nothing here talks to the
//! worker on the UI thread: reads come from [`Live`], actions go to a
//! thread of their own and report back into it.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use studio_worker::scheduler::snapshot::Snapshot;

use crate::client::{Client, ClientError, Registration};
use crate::form::{self, Field, Widget};
use crate::logs::{self, Entry, Level};
use crate::state::Badge;

/// How wide text fields are drawn.
const FIELD_WIDTH: f32 = 420.0;

/// Failures and errors.
const RED: egui::Color32 = egui::Color32::from_rgb(0xd1, 0x24, 0x2f);

/// How often the poller asks the worker.
pub const POLL: Duration = Duration::from_millis(500);

/// What the poller last read, and what actions answered.
#[derive(Default)]
pub struct Live {
    /// `None`: no worker answered; else the snapshot or why it is
    /// still starting.
    pub status: Option<Result<Snapshot, String>>,
    /// Why the last read failed (no worker, not answering).
    pub error: Option<String>,
    /// The log tail.
    pub logs: Vec<Entry>,
    /// The number to ask after next.
    pub logs_next: u64,
    /// The config as the worker gave it, and its live keys.
    pub config: Option<(Value, Vec<String>)>,
    /// The last action's answer (shown under the tabs).
    pub message: Option<String>,
    /// The last update check's text.
    pub update: Option<String>,
    /// When the status was last read.
    pub read_at: Option<Instant>,
    /// While the worker waits for credentials: what it waits for.
    pub registration: Option<Registration>,
}

/// The tabs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tab {
    /// The worker at a glance.
    Status,
    /// The job in flight and the last 50.
    Jobs,
    /// Every config key.
    Config,
    /// The live log.
    Logs,
    /// Version, config path, updates.
    About,
}

impl Tab {
    /// Every tab, in order.
    pub const ALL: [Tab; 5] = [Tab::Status, Tab::Jobs, Tab::Config, Tab::Logs, Tab::About];

    /// Its title.
    pub fn title(self) -> &'static str {
        match self {
            Tab::Status => "Status",
            Tab::Jobs => "Jobs",
            Tab::Config => "Config",
            Tab::Logs => "Logs",
            Tab::About => "About",
        }
    }
}

/// The window's state.
pub struct App {
    client: Arc<Client>,
    /// The `studio-worker` the window starts when none runs.
    worker_program: PathBuf,
    /// The worker this window started, if it did (drained when the
    /// window quits; a service is never stopped).
    started: Arc<Mutex<Option<std::process::Child>>>,
    live: Arc<Mutex<Live>>,
    /// The tab shown.
    pub tab: Tab,
    fields: Vec<(String, Vec<Field>)>,
    loaded: Option<Value>,
    level: Level,
    query: String,
    autoscroll: bool,
    restart_banner: Vec<String>,
    /// The register form's studio URL (filled from the worker's config
    /// the first time the form shows).
    reg_url: Option<String>,
    /// The register form's bootstrap token.
    reg_token: String,
    /// Whether the window starts at login, once read.
    autostart_on: Option<bool>,
}

impl App {
    /// A window for the worker that runs with `config`; starts the poller
    /// (which asks `repaint` to redraw after each read).
    pub fn new(config: PathBuf, repaint: impl Fn() + Send + 'static) -> Self {
        let client = Arc::new(Client::new(&config));
        let live = Arc::new(Mutex::new(Live::default()));
        spawn_poller(client.clone(), live.clone(), repaint);
        Self {
            client,
            worker_program: crate::launch::worker_program(),
            started: Arc::new(Mutex::new(None)),
            live,
            tab: Tab::Status,
            fields: Vec::new(),
            loaded: None,
            level: Level::Info,
            query: String::new(),
            autoscroll: true,
            restart_banner: Vec::new(),
            reg_url: None,
            reg_token: String::new(),
            autostart_on: None,
        }
    }

    /// Starts workers with `program` instead of the one beside the window.
    pub fn with_worker_program(mut self, program: PathBuf) -> Self {
        self.worker_program = program;
        self
    }

    /// How a worker would be started now.
    pub fn start_plan(&self) -> crate::launch::Start {
        crate::launch::plan(
            self.client.config_path(),
            &self.worker_program,
            &crate::launch::unit_dirs(),
        )
    }

    /// Starts a worker for this config (the service, else a child).
    pub fn start_worker(&self) {
        let plan = self.start_plan();
        let said = match crate::launch::start(&plan, self.client.config_path()) {
            Ok(child) => {
                let started = child.is_some();
                *self.started.lock().unwrap_or_else(|p| p.into_inner()) = child;
                if started {
                    "started studio-worker run as this window's child".to_string()
                } else {
                    "started the service".to_string()
                }
            }
            Err(e) => format!("cannot start the worker: {e}"),
        };
        lock(&self.live).message = Some(said);
    }

    /// Before the window goes: a worker it started drains (its job
    /// finishes and is delivered) and exits.
    pub fn quit(&self) {
        let mut started = self.started.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(mut child) = started.take() {
            let _ = self.client.drain();
            let deadline = Instant::now() + Duration::from_secs(120);
            while Instant::now() < deadline {
                if !matches!(child.try_wait(), Ok(None)) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The badge as of the last read.
    pub fn badge(&self) -> Badge {
        let live = lock(&self.live);
        Badge::of(live.status.as_ref())
    }

    /// Runs `what` against the worker on a thread of its own; its answer
    /// becomes the message line.
    fn act(&self, what: impl FnOnce(&Client) -> Result<String, ClientError> + Send + 'static) {
        let (client, live) = (self.client.clone(), self.live.clone());
        std::thread::spawn(move || {
            let said = match what(&client) {
                Ok(s) => s,
                Err(e) => e.to_string(),
            };
            lock(&live).message = Some(said);
        });
    }

    /// Pauses or resumes claiming (the endpoint's control, not a config
    /// edit).
    pub fn toggle_pause(&self) {
        if self.badge().resumable() {
            self.act(|c| c.resume());
        } else {
            self.act(|c| c.pause());
        }
    }

    /// Draws the window.
    pub fn ui(&mut self, ui: &mut egui::Ui) {
        ui.horizontal(|ui| {
            for t in Tab::ALL {
                ui.selectable_value(&mut self.tab, t, t.title());
            }
        });
        if let Some(m) = lock(&self.live).message.clone() {
            ui.label(m);
        }
        ui.separator();
        match self.tab {
            Tab::Status => self.status_tab(ui),
            Tab::Jobs => self.jobs_tab(ui),
            Tab::Config => self.config_tab(ui),
            Tab::Logs => self.logs_tab(ui),
            Tab::About => self.about_tab(ui),
        }
    }

    fn status_tab(&mut self, ui: &mut egui::Ui) {
        let badge = self.badge();
        let [r, g, b] = badge.tray().rgb();
        ui.horizontal(|ui| {
            let (rect, _) = ui.allocate_exact_size(egui::vec2(14.0, 14.0), egui::Sense::hover());
            ui.painter()
                .circle_filled(rect.center(), 6.0, egui::Color32::from_rgb(r, g, b));
            ui.strong(badge.label());
            if !badge.detail().is_empty() {
                ui.label(badge.detail());
            }
        });
        let live = lock(&self.live);
        match (&live.status, &live.error) {
            (Some(Ok(s)), _) => {
                egui::Grid::new("sessions").striped(true).show(ui, |ui| {
                    ui.strong("session");
                    ui.strong("worker id");
                    ui.strong("state");
                    ui.strong("threshold");
                    ui.strong("last heartbeat");
                    ui.end_row();
                    for x in &s.sessions {
                        ui.label(x.gpu.map_or(x.slot.to_string(), |g| format!("GPU {g}")));
                        ui.label(x.worker_id.clone().unwrap_or_default());
                        ui.label(&x.state);
                        ui.label(format!("{} GB", x.threshold_gb));
                        ui.label(x.heartbeat_age_ms.map_or("none yet".into(), |ms| {
                            format!("{:.1} s ago", ms as f64 / 1000.0)
                        }));
                        ui.end_row();
                    }
                });
                ui.separator();
                egui::Grid::new("gpus").striped(true).show(ui, |ui| {
                    for h in ["GPU", "total", "reserved", "resident", "free"] {
                        ui.strong(h);
                    }
                    ui.end_row();
                    for g in &s.gpus {
                        ui.label(format!("{} {}", g.index, g.name));
                        ui.label(gb(g.total_bytes));
                        ui.label(gb(g.reserved_bytes));
                        ui.label(gb(g.held_bytes));
                        ui.label(gb(g.free_bytes));
                        ui.end_row();
                    }
                });
                if s.gpus.is_empty() {
                    ui.label("no GPU: jobs run on the CPU");
                }
                let models: Vec<String> = s
                    .runners
                    .iter()
                    .map(|r| format!("{} ({})", r.model, r.engine))
                    .collect();
                ui.label(format!(
                    "models kept loaded: {}",
                    if models.is_empty() {
                        "none".into()
                    } else {
                        models.join(", ")
                    }
                ));
            }
            (Some(Err(why)), _) => {
                let (why, reg) = (why.clone(), live.registration.clone());
                drop(live);
                ui.label(format!("The worker is starting: {why}."));
                if let Some(reg) = reg.filter(|r| r.waiting) {
                    self.register_form(ui, &reg);
                }
            }
            (None, Some(e)) => {
                ui.label(e);
                let plan = self.start_plan();
                ui.label(format!("Start worker will {}.", plan.describe()));
                drop(live);
                if ui.button("Start worker").clicked() {
                    self.start_worker();
                }
            }
            (None, None) => {
                ui.label("asking the worker…");
            }
        }
    }

    /// A worker without credentials: its pending approval requests, and
    /// a form to register it with an operator's bootstrap token or to
    /// ask for approval.
    fn register_form(&mut self, ui: &mut egui::Ui, reg: &Registration) {
        ui.separator();
        ui.heading("Register this worker");
        for w in &reg.identities {
            let who = w
                .gpu
                .map_or("This worker".to_string(), |g| format!("GPU {g}"));
            ui.label(match &w.request_id {
                Some(rr) => format!(
                    "{who}: pending operator approval (request {rr}). An operator approves it in the studio; the worker connects then."
                ),
                None => format!("{who}: not registered."),
            });
        }
        if let Some(t) = &reg.trouble {
            ui.colored_label(RED, t);
        }
        let url = self.reg_url.get_or_insert_with(|| reg.api_base_url.clone());
        egui::Grid::new("register").show(ui, |ui| {
            let id = ui.label("studio URL").id;
            ui.add(egui::TextEdit::singleline(url).desired_width(FIELD_WIDTH))
                .labelled_by(id);
            ui.end_row();
            let id = ui.label("bootstrap token").id;
            ui.add(
                egui::TextEdit::singleline(&mut self.reg_token)
                    .password(true)
                    .desired_width(FIELD_WIDTH),
            )
            .labelled_by(id);
            ui.end_row();
        });
        let url = self.reg_url.clone().filter(|u| *u != reg.api_base_url);
        let (register, ask) = ui
            .horizontal(|ui| {
                (
                    ui.button("Register").clicked(),
                    ui.button("Request approval").clicked(),
                )
            })
            .inner;
        if register {
            let token = std::mem::take(&mut self.reg_token);
            let url = url.clone();
            self.act(move |c| match c.register(&token, url.as_deref()) {
                Ok(ids) => Ok(format!("registered as {}", ids.join(", "))),
                Err(e) => Ok(format!("not registered: {}", field_error(e))),
            });
        }
        if ask {
            self.act(move |c| match c.request_approval(url.as_deref()) {
                Ok(ws) => Ok(ws
                    .iter()
                    .map(|w| match &w.request_id {
                        Some(rr) => format!("pending operator approval (request {rr})"),
                        None if w.registered => "approved".to_string(),
                        None => "no request yet".to_string(),
                    })
                    .collect::<Vec<_>>()
                    .join("; ")),
                Err(e) => Ok(format!("approval not requested: {}", field_error(e))),
            });
        }
        ui.label(if reg.bootstrap_token_stored {
            "A bootstrap token is stored in the config and is tried first; Request approval drops it."
        } else {
            "Register uses the token once and does not store it."
        });
    }

    fn jobs_tab(&mut self, ui: &mut egui::Ui) {
        let live = lock(&self.live);
        let Some(Ok(s)) = &live.status else {
            ui.label("no worker answers");
            return;
        };
        ui.heading("In flight");
        if s.jobs.is_empty() {
            ui.label("none");
        }
        for j in &s.jobs {
            ui.label(format!(
                "{} · {} · {} on {}",
                j.job_id, j.kind, j.model, j.engine
            ));
            if !j.prompt.is_empty() {
                ui.label(format!("“{}”", j.prompt));
            }
            // An engine that cannot say how much is left reports a total
            // of 0: the bar then only shows that it moves.
            let fraction = if j.total > 0 {
                j.done as f32 / j.total as f32
            } else {
                0.0
            };
            let text = if j.total > 0 {
                format!("{} {}/{}", j.phase, j.done, j.total)
            } else {
                format!("{} ({} steps)", j.phase, j.done)
            };
            ui.add(
                egui::ProgressBar::new(fraction)
                    .animate(j.total == 0)
                    .text(text),
            );
            ui.label(format!("elapsed {}", duration(j.age_ms)));
        }
        ui.separator();
        ui.heading("Finished");
        egui::ScrollArea::vertical().show(ui, |ui| {
            egui::Grid::new("recent").striped(true).show(ui, |ui| {
                for f in s.recent.iter().rev() {
                    let colour = match f.outcome.as_str() {
                        "completed" => egui::Color32::from_rgb(0x2e, 0xa0, 0x43),
                        "cancelled" => egui::Color32::GRAY,
                        _ => RED,
                    };
                    ui.label(&f.job_id);
                    ui.colored_label(colour, &f.outcome);
                    ui.label(format!("{} {}", f.kind, f.model));
                    ui.label(duration(f.duration_ms));
                    ui.label(f.error.clone().unwrap_or_default());
                    ui.end_row();
                }
            });
        });
    }

    fn config_tab(&mut self, ui: &mut egui::Ui) {
        let fetched = lock(&self.live).config.clone();
        if self.loaded.is_none() {
            match fetched {
                Some((config, live)) => {
                    self.fields = form::layout(&config, &live);
                    self.loaded = Some(config);
                }
                None => {
                    ui.label("reading the config from the worker…");
                    return;
                }
            }
        }
        if !self.restart_banner.is_empty() {
            ui.colored_label(
                egui::Color32::from_rgb(0xe0, 0x9b, 0x12),
                format!(
                    "Saved. Restart the worker to apply: {}",
                    self.restart_banner.join(", ")
                ),
            );
        }
        let mut save = false;
        ui.horizontal(|ui| {
            save = ui.button("Save").clicked();
            if ui.button("Reload").clicked() {
                self.loaded = None;
                lock(&self.live).config = None;
            }
        });
        egui::ScrollArea::vertical().show(ui, |ui| {
            for (group, fields) in &mut self.fields {
                egui::CollapsingHeader::new(group.as_str())
                    .default_open(group == "Worker")
                    .show(ui, |ui| {
                        egui::Grid::new(group.as_str()).show(ui, |ui| {
                            for f in fields.iter_mut() {
                                let label = if f.live {
                                    f.key.clone()
                                } else {
                                    format!("{} (restart)", f.key)
                                };
                                let id = ui.label(label).id;
                                field_widget(ui, f, id);
                                ui.end_row();
                            }
                        });
                    });
            }
        });
        if save {
            self.save();
        }
    }

    fn save(&mut self) {
        let Some(loaded) = self.loaded.clone() else {
            return;
        };
        let all: Vec<Field> = self.fields.iter().flat_map(|(_, f)| f.clone()).collect();
        let patch = match form::patch(&loaded, &all) {
            Ok(p) if p.is_empty() => {
                lock(&self.live).message = Some("nothing changed".into());
                return;
            }
            Ok(p) => p,
            Err(e) => {
                lock(&self.live).message = Some(format!("not saved: {e}"));
                return;
            }
        };
        // Saved synchronously from the UI's point of view: one small
        // request on a thread, answered into the message line.
        let (client, live) = (self.client.clone(), self.live.clone());
        let result = std::thread::spawn(move || client.save_config(&patch))
            .join()
            .unwrap_or_else(|_| Err(ClientError::Refused("the save thread panicked".into())));
        match result {
            Ok(saved) => {
                self.restart_banner = saved.restart.clone();
                lock(&live).message = Some(format!("saved: {}", saved.changed.join(", ")));
                self.loaded = None;
                lock(&live).config = None;
            }
            Err(ClientError::BadValue { key, message }) => {
                lock(&live).message = Some(format!("not saved: {key}: {message}"));
            }
            Err(e) => lock(&live).message = Some(format!("not saved: {e}")),
        }
    }

    fn logs_tab(&mut self, ui: &mut egui::Ui) {
        ui.horizontal(|ui| {
            egui::ComboBox::from_label("level")
                .selected_text(format!("{:?}", self.level))
                .show_ui(ui, |ui| {
                    for l in [Level::Info, Level::Warn, Level::Error] {
                        ui.selectable_value(&mut self.level, l, format!("{l:?}"));
                    }
                });
            let id = ui.label("search").id;
            ui.text_edit_singleline(&mut self.query).labelled_by(id);
            ui.checkbox(&mut self.autoscroll, "auto-scroll");
        });
        let live = lock(&self.live);
        let shown = logs::filter(&live.logs, self.level, &self.query);
        ui.label(format!("{} of {} entries", shown.len(), live.logs.len()));
        egui::ScrollArea::vertical()
            .stick_to_bottom(self.autoscroll)
            .show(ui, |ui| {
                for e in shown {
                    let colour = match e.level.as_str() {
                        "error" => RED,
                        "warn" => egui::Color32::from_rgb(0xe0, 0x9b, 0x12),
                        _ => ui.visuals().text_color(),
                    };
                    let job = e
                        .job_id
                        .as_deref()
                        .map(|j| format!(" [{j}]"))
                        .unwrap_or_default();
                    ui.colored_label(
                        colour,
                        format!(
                            "{} {:5} {}{job}: {}",
                            short_time(&e.ts),
                            e.level,
                            e.category,
                            e.message
                        ),
                    );
                }
            });
    }

    fn about_tab(&mut self, ui: &mut egui::Ui) {
        let version = env!("CARGO_PKG_VERSION");
        ui.label(format!("studio-worker-ui {version}"));
        if let Some(Ok(s)) = &lock(&self.live).status {
            ui.label(format!("worker {} (pid {})", s.version, s.pid));
        }
        ui.label(format!("Sentry release: studio-worker@{version}"));
        ui.label(format!("config: {}", self.client.config_path().display()));
        if let (Some(at), Ok(exe)) = (crate::launch::Autostart::here(), std::env::current_exe()) {
            // Read once (on Windows it runs `reg query`), then as set.
            let mut on = *self.autostart_on.get_or_insert_with(|| at.is_on());
            if ui.checkbox(&mut on, "Run in tray on login").changed() {
                let done = at.set(on, &exe, self.client.config_path());
                self.autostart_on = Some(at.is_on());
                lock(&self.live).message = Some(match done {
                    Ok(()) if on => format!("wrote {}", at.describe()),
                    Ok(()) => format!("removed {}", at.describe()),
                    Err(e) => format!("{}: {e}", at.describe()),
                });
            }
        }
        if ui.button("Check for updates").clicked() {
            let (client, live) = (self.client.clone(), self.live.clone());
            std::thread::spawn(move || {
                let text = client.check_update().unwrap_or_else(|e| e.to_string());
                lock(&live).update = Some(text);
            });
        }
        if let Some(u) = &lock(&self.live).update {
            ui.monospace(u);
        }
    }
}

/// The widget for one field, labelled by its key's label (for screen
/// readers, and for the tests that find it by the key).
fn field_widget(ui: &mut egui::Ui, f: &mut Field, label: egui::Id) {
    let width = match f.widget {
        Widget::Integer | Widget::Number => 120.0,
        _ => FIELD_WIDTH,
    };
    match f.widget {
        Widget::Check => {
            let mut on = f.text == "true";
            if ui.checkbox(&mut on, "").labelled_by(label).changed() {
                f.text = on.to_string();
            }
        }
        Widget::Secret => {
            let edit = egui::TextEdit::singleline(&mut f.text)
                .password(true)
                .desired_width(width);
            ui.add(edit).labelled_by(label);
        }
        Widget::Json => {
            let edit = egui::TextEdit::multiline(&mut f.text)
                .desired_rows(1)
                .desired_width(width)
                .code_editor();
            ui.add(edit).labelled_by(label);
        }
        Widget::Integer | Widget::Number | Widget::Text => {
            let edit = egui::TextEdit::singleline(&mut f.text).desired_width(width);
            ui.add(edit).labelled_by(label);
        }
    }
}

/// A refusal as the form shows it: the field's message alone.
fn field_error(e: ClientError) -> String {
    match e {
        ClientError::BadValue { message, .. } => message,
        other => other.to_string(),
    }
}

fn duration(ms: u64) -> String {
    if ms < 1000 {
        format!("{ms} ms")
    } else {
        format!("{:.1} s", ms as f64 / 1000.0)
    }
}

fn gb(bytes: u64) -> String {
    format!("{:.1} GB", bytes as f64 / (1u64 << 30) as f64)
}

fn short_time(ts: &str) -> &str {
    ts.get(11..19).unwrap_or(ts)
}

fn lock(live: &Mutex<Live>) -> std::sync::MutexGuard<'_, Live> {
    live.lock().unwrap_or_else(|p| p.into_inner())
}

/// Reads the worker every [`POLL`]: its status, the new log lines, and
/// the config when the window has none.
fn spawn_poller(client: Arc<Client>, live: Arc<Mutex<Live>>, repaint: impl Fn() + Send + 'static) {
    std::thread::spawn(move || loop {
        let status = client.status();
        let after = lock(&live).logs_next;
        let logs = status.as_ref().ok().map(|_| client.logs(after));
        let registration = match &status {
            Ok(Err(_)) => client.registration().ok(),
            _ => None,
        };
        let want_config = lock(&live).config.is_none();
        let config = if want_config && status.is_ok() {
            client.config().ok()
        } else {
            None
        };
        {
            let mut l = lock(&live);
            match status {
                Ok(s) => {
                    l.status = Some(s);
                    l.error = None;
                }
                Err(e) => {
                    l.status = None;
                    l.error = Some(e.to_string());
                }
            }
            if let Some(Ok((entries, next))) = logs {
                logs::append(&mut l.logs, entries);
                l.logs_next = next;
            }
            if config.is_some() {
                l.config = config;
            }
            l.registration = registration;
            l.read_at = Some(Instant::now());
        }
        repaint();
        if Arc::strong_count(&live) == 1 {
            return;
        }
        std::thread::sleep(POLL);
    });
}

impl Drop for App {
    fn drop(&mut self) {
        self.quit();
    }
}
