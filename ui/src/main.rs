//! `studio-worker-ui`: the desktop window and tray icon, a client of the
//! worker running with the same config (never a second worker).
//!
//! ```text
//! studio-worker-ui [--config PATH]
//! studio-worker-ui --tray                                          # start hidden in the tray (login autostart)
//! studio-worker-ui --config PATH --screenshot TAB --out FILE.png   # one tab to a PNG, then exit
//! ```

use std::path::PathBuf;

use studio_worker_ui::app::{App, Tab};

struct Window {
    app: App,
    tray: Option<tray::Tray>,
    shot: Option<(Tab, PathBuf, u32)>,
    shot_done: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl eframe::App for Window {
    fn logic(&mut self, ctx: &egui::Context, _frame: &mut eframe::Frame) {
        if let Some(t) = &mut self.tray {
            t.update(&self.app, ctx);
        }
        // Closing the window hides it to the tray (when there is one).
        if ctx.input(|i| i.viewport().close_requested())
            && self.tray.as_ref().is_some_and(|t| !t.quitting)
        {
            ctx.send_viewport_cmd(egui::ViewportCommand::CancelClose);
            ctx.send_viewport_cmd(egui::ViewportCommand::Visible(false));
        }
        if let Some((tab, out, frames)) = &mut self.shot {
            self.app.tab = *tab;
            *frames += 1;
            // Some frames for the poller's first read to land, then one
            // screenshot, written by its callback; the next frame closes.
            if *frames == 40 {
                let (out, done) = (out.clone(), self.shot_done.clone());
                ctx.send_viewport_cmd(egui::ViewportCommand::Screenshot(
                    egui::ScreenshotCallback::new(move |img| {
                        let [w, h] = img.size;
                        let rgba: Vec<u8> = img.pixels.iter().flat_map(|p| p.to_array()).collect();
                        let saved = image::save_buffer(
                            &out,
                            &rgba,
                            w as u32,
                            h as u32,
                            image::ExtendedColorType::Rgba8,
                        );
                        if let Err(e) = saved {
                            eprintln!("studio-worker-ui: cannot write {}: {e}", out.display());
                        }
                        done.store(true, std::sync::atomic::Ordering::SeqCst);
                    }),
                ));
            }
            if self.shot_done.load(std::sync::atomic::Ordering::SeqCst) {
                ctx.send_viewport_cmd(egui::ViewportCommand::Close);
            }
            ctx.request_repaint();
        }
    }

    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        egui::CentralPanel::default().show(ui, |ui| self.app.ui(ui));
    }
}

mod tray {
    //! The tray icon: its colour follows the badge; Open, Pause/Resume and
    //! Quit. Quit closes the window; the worker keeps running (a service
    //! manager would not restart a clean exit).

    use studio_worker_ui::app::App;
    use studio_worker_ui::state::Tray as Colour;
    use tray_icon::menu::{Menu, MenuEvent, MenuItem};
    use tray_icon::{Icon, TrayIcon, TrayIconBuilder};

    pub struct Tray {
        icon: TrayIcon,
        open: MenuItem,
        pause: MenuItem,
        quit: MenuItem,
        colour: Option<Colour>,
        pub quitting: bool,
    }

    fn icon(c: Colour) -> Option<Icon> {
        let [r, g, b] = c.rgb();
        let size = 32u32;
        let mut rgba = Vec::with_capacity((size * size * 4) as usize);
        for y in 0..size {
            for x in 0..size {
                let (dx, dy) = (x as f32 - 15.5, y as f32 - 15.5);
                let inside = dx * dx + dy * dy <= 14.0 * 14.0;
                rgba.extend_from_slice(&[r, g, b, if inside { 255 } else { 0 }]);
            }
        }
        Icon::from_rgba(rgba, size, size).ok()
    }

    impl Tray {
        /// The tray, or why there is none (no StatusNotifier host).
        pub fn new() -> Result<Self, String> {
            let open = MenuItem::new("Open window", true, None);
            let pause = MenuItem::new("Pause claiming", true, None);
            let quit = MenuItem::new("Quit", true, None);
            let menu = Menu::new();
            menu.append_items(&[&open, &pause, &quit])
                .map_err(|e| e.to_string())?;
            let icon = TrayIconBuilder::new()
                .with_menu(Box::new(menu))
                .with_tooltip("studio-worker")
                .with_icon(icon(Colour::Red).ok_or("no icon")?)
                .build()
                .map_err(|e| e.to_string())?;
            Ok(Self {
                icon,
                open,
                pause,
                quit,
                colour: None,
                quitting: false,
            })
        }

        pub fn update(&mut self, app: &App, ctx: &egui::Context) {
            let badge = app.badge();
            let c = badge.tray();
            if self.colour != Some(c) {
                if let Some(i) = icon(c) {
                    let _ = self.icon.set_icon(Some(i));
                }
                let _ = self
                    .icon
                    .set_tooltip(Some(format!("studio-worker: {}", badge.label())));
                self.colour = Some(c);
            }
            self.pause.set_text(if badge.resumable() {
                "Resume claiming"
            } else {
                "Pause claiming"
            });
            while let Ok(e) = MenuEvent::receiver().try_recv() {
                if e.id == self.open.id() {
                    ctx.send_viewport_cmd(egui::ViewportCommand::Visible(true));
                    ctx.send_viewport_cmd(egui::ViewportCommand::Focus);
                } else if e.id == self.pause.id() {
                    app.toggle_pause();
                } else if e.id == self.quit.id() {
                    self.quitting = true;
                    ctx.send_viewport_cmd(egui::ViewportCommand::Close);
                }
            }
            ctx.request_repaint_after(std::time::Duration::from_millis(500));
        }
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (mut config, mut shot_tab, mut out, mut hidden) = (None, None, None, false);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--config" => config = args.next().map(PathBuf::from),
            "--screenshot" => shot_tab = args.next(),
            "--out" => out = args.next().map(PathBuf::from),
            "--tray" => hidden = true,
            "-V" | "--version" => {
                println!("studio-worker-ui {}", env!("CARGO_PKG_VERSION"));
                return;
            }
            "-h" | "--help" => {
                println!(
                    "studio-worker-ui [--config PATH] [--tray] [--screenshot TAB --out FILE.png] [--version]"
                );
                return;
            }
            other => {
                eprintln!("studio-worker-ui: unknown argument {other} (see --help)");
                std::process::exit(2);
            }
        }
    }
    let config = match config
        .map(Ok)
        .unwrap_or_else(studio_worker::config::Config::default_path)
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("studio-worker-ui: {e}");
            std::process::exit(2);
        }
    };
    let shot = match (shot_tab, out) {
        (Some(t), Some(o)) => match Tab::ALL.iter().find(|x| x.title().eq_ignore_ascii_case(&t)) {
            Some(tab) => Some((*tab, o, 0)),
            None => {
                eprintln!("studio-worker-ui: no tab {t} (Status, Jobs, Config, Logs, About)");
                std::process::exit(2);
            }
        },
        (None, None) => None,
        _ => {
            eprintln!("studio-worker-ui: --screenshot needs --out, and --out needs --screenshot");
            std::process::exit(2);
        }
    };
    let options = eframe::NativeOptions {
        viewport: egui::ViewportBuilder::default()
            .with_title("studio-worker")
            .with_inner_size([820.0, 560.0]),
        ..Default::default()
    };
    let result = eframe::run_native(
        "studio-worker",
        options,
        Box::new(move |cc| {
            let ctx = cc.egui_ctx.clone();
            let app = App::new(config, move || ctx.request_repaint());
            let tray = if shot.is_some() {
                None
            } else {
                match tray::Tray::new() {
                    Ok(t) => Some(t),
                    Err(e) => {
                        eprintln!("studio-worker-ui: no tray icon ({e}); closing the window quits");
                        None
                    }
                }
            };
            // Started for the tray (at login): the window waits hidden
            // until Open, when there is a tray to open it from.
            if hidden && tray.is_some() {
                cc.egui_ctx
                    .send_viewport_cmd(egui::ViewportCommand::Visible(false));
            }
            Ok(Box::new(Window {
                app,
                tray,
                shot,
                shot_done: Default::default(),
            }))
        }),
    );
    if let Err(e) = result {
        eprintln!("studio-worker-ui: {e}");
        std::process::exit(1);
    }
}
