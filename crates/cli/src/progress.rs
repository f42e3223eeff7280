//! Progress bars on a terminal (files, bytes, rate, ETA), drawn on stderr from the shared
//! counters of a running job. None when stderr is not a terminal, or with --json/--quiet.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use lifeboat_sources::Progress;

/// A bar that follows a [`Progress`] until dropped.
pub struct Bar {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Bar {
    /// Starts a bar for `progress` when `enabled` and stderr is a terminal.
    pub fn start(progress: Arc<Progress>, verb: &'static str, enabled: bool) -> Bar {
        let stop = Arc::new(AtomicBool::new(false));
        if !enabled || !std::io::stderr().is_terminal() {
            return Bar { stop, thread: None };
        }
        let s = stop.clone();
        let thread = std::thread::Builder::new()
            .name("progress".into())
            .spawn(move || {
                let pb = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
                let style = ProgressStyle::with_template(
                    "{prefix} [{bar:20}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta} {msg}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> ");
                pb.set_style(style);
                pb.set_prefix(verb);
                while !s.load(Ordering::Relaxed) {
                    pb.set_length(Progress::get(&progress.bytes_total).max(1));
                    pb.set_position(Progress::get(&progress.bytes_done));
                    pb.set_message(format!(
                        "{}/{} files{}",
                        Progress::get(&progress.files_done),
                        Progress::get(&progress.files_total),
                        match Progress::get(&progress.errors) {
                            0 => String::new(),
                            n => format!(", {n} errors"),
                        }
                    ));
                    std::thread::park_timeout(Duration::from_millis(200));
                }
                pb.finish_and_clear();
            })
            .ok();
        Bar { stop, thread }
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}
