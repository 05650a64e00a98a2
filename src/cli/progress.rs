//! Progress for long command-line work (`simulate`, `migrate`, `report weekly`, …): a bar
//! or spinner drawn on stderr, and only when stderr is a terminal. In a pipe, a file, CI
//! or a test it is a no-op that writes nothing at all, so stdout and stderr stay clean for
//! whatever reads them. A thin wrapper over `indicatif`; pure code (`analysis/`, `stats/`,
//! `ope/`) never sees it and reports progress through a plain callback instead (see
//! [`Progress::callback`]).
//!
//! ```no_run
//! use strategist::cli::progress::Progress;
//! let bar = Progress::new(500, "simulate aa");
//! for _ in 0..500 {
//!     bar.inc(1);
//! }
//! bar.finish();
//! ```

use std::borrow::Cow;
use std::io::IsTerminal as _;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How often a visible bar or spinner redraws by itself (so a long single step still shows
/// it is alive, and the elapsed time moves).
const TICK: Duration = Duration::from_millis(120);

const BAR_TEMPLATE: &str = "{spinner} {prefix}: [{bar:32}] {human_pos}/{human_len} {elapsed_precise} (eta {eta}) {msg}";
const SPINNER_TEMPLATE: &str = "{spinner} {prefix}: {human_pos} {elapsed_precise} {msg}";

/// A progress bar or spinner on stderr; invisible unless stderr is a terminal. Cheap to
/// call from several threads (`inc` takes `&self`). Cleared from the terminal by
/// [`Progress::finish`], or when dropped (an error path leaves no stale bar behind).
#[derive(Debug)]
pub struct Progress {
    bar: Option<ProgressBar>,
}

/// Whether progress may be drawn: stderr is a terminal and `TERM` is not `dumb`.
pub fn stderr_is_interactive() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("TERM").is_none_or(|t| t != "dumb")
}

impl Progress {
    /// A bar for `len` steps (e.g. replications), labelled `label`.
    pub fn new(len: u64, label: &str) -> Progress {
        Self::on(stderr_is_interactive().then(ProgressDrawTarget::stderr), Some(len), label)
    }

    /// A spinner with a step count, for work of unknown length.
    pub fn spinner(label: &str) -> Progress {
        Self::on(stderr_is_interactive().then(ProgressDrawTarget::stderr), None, label)
    }

    /// A progress value that never draws.
    pub fn hidden() -> Progress {
        Progress { bar: None }
    }

    /// Draws on `target`, or nowhere when `None`.
    fn on(target: Option<ProgressDrawTarget>, len: Option<u64>, label: &str) -> Progress {
        let Some(target) = target else {
            return Progress::hidden();
        };
        let (bar, template) = match len {
            Some(len) => (ProgressBar::with_draw_target(Some(len), target), BAR_TEMPLATE),
            None => (ProgressBar::with_draw_target(None, target), SPINNER_TEMPLATE),
        };
        // The templates are constants; should one ever fail to parse, the default style
        // still shows the position, so the error is not worth failing the command for.
        if let Ok(style) = ProgressStyle::with_template(template) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_prefix(label.to_string());
        bar.enable_steady_tick(TICK);
        Progress { bar: Some(bar) }
    }

    /// Whether anything is drawn.
    pub fn is_visible(&self) -> bool {
        self.bar.is_some()
    }

    /// Advances by `n` steps.
    pub fn inc(&self, n: u64) {
        if let Some(b) = &self.bar {
            b.inc(n);
        }
    }

    /// Sets the total once it is known (a spinner becomes a bar).
    pub fn set_length(&self, len: u64) {
        if let Some(b) = &self.bar {
            if b.length().is_none() {
                if let Ok(style) = ProgressStyle::with_template(BAR_TEMPLATE) {
                    b.set_style(style.progress_chars("=> "));
                }
            }
            b.set_length(len);
        }
    }

    /// Sets the number of steps done.
    pub fn set_position(&self, pos: u64) {
        if let Some(b) = &self.bar {
            b.set_position(pos);
        }
    }

    /// Text shown after the bar (e.g. the step in progress).
    pub fn set_message(&self, message: impl Into<Cow<'static, str>>) {
        if let Some(b) = &self.bar {
            b.set_message(message);
        }
    }

    /// Runs `f` with the bar cleared from the terminal, then redraws it: for log lines or
    /// other output written to stderr while the bar is shown.
    pub fn suspend<R>(&self, f: impl FnOnce() -> R) -> R {
        match &self.bar {
            Some(b) => b.suspend(f),
            None => f(),
        }
    }

    /// A callback for pure code that reports steps done (`&dyn Fn(u64)`); usable from
    /// several threads.
    pub fn callback(&self) -> impl Fn(u64) + Sync + '_ {
        move |n| self.inc(n)
    }

    /// Removes the bar from the terminal; the command's output follows on a clean line.
    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(b) = &self.bar {
            if !b.is_finished() {
                b.finish_and_clear();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::{Arc, Mutex};

    use indicatif::TermLike;

    use super::*;

    /// A terminal that records what is written to it.
    #[derive(Debug, Clone, Default)]
    struct Screen(Arc<Mutex<String>>);

    impl Screen {
        fn text(&self) -> String {
            self.0.lock().unwrap().clone()
        }
    }

    impl TermLike for Screen {
        fn width(&self) -> u16 {
            120
        }
        fn move_cursor_up(&self, _: usize) -> io::Result<()> {
            Ok(())
        }
        fn move_cursor_down(&self, _: usize) -> io::Result<()> {
            Ok(())
        }
        fn move_cursor_right(&self, _: usize) -> io::Result<()> {
            Ok(())
        }
        fn move_cursor_left(&self, _: usize) -> io::Result<()> {
            Ok(())
        }
        fn write_line(&self, s: &str) -> io::Result<()> {
            self.0.lock().unwrap().push_str(&format!("{s}\n"));
            Ok(())
        }
        fn write_str(&self, s: &str) -> io::Result<()> {
            self.0.lock().unwrap().push_str(s);
            Ok(())
        }
        fn clear_line(&self) -> io::Result<()> {
            self.0.lock().unwrap().push_str("<clear>");
            Ok(())
        }
        fn flush(&self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn on_a_terminal_the_bar_shows_its_label_and_count_and_is_cleared_at_the_end() {
        let screen = Screen::default();
        let p = Progress::on(Some(ProgressDrawTarget::term_like(Box::new(screen.clone()))), Some(10), "simulate aa");
        assert!(p.is_visible());
        let cb = p.callback();
        std::thread::scope(|s| {
            for _ in 0..2 {
                s.spawn(|| (0..3).for_each(|_| cb(1)));
            }
        });
        p.set_message("step x");
        let drawn = screen.text();
        assert!(drawn.contains("simulate aa: ["), "{drawn}");
        assert!(drawn.contains("6/10"), "{drawn}");
        assert!(drawn.contains("step x"), "{drawn}");
        p.finish();
        assert!(screen.text().ends_with("<clear>"), "{}", screen.text());
    }

    #[test]
    fn a_spinner_counts_steps_and_becomes_a_bar_once_the_total_is_known() {
        let screen = Screen::default();
        let p = Progress::on(Some(ProgressDrawTarget::term_like(Box::new(screen.clone()))), None, "migrate");
        // With the steady tick on, `inc` draws at the next tick; a message draws at once.
        p.inc(2);
        p.set_message("2 of ?");
        assert!(screen.text().contains("migrate: 2"), "{}", screen.text());
        p.set_length(5);
        p.set_position(3);
        p.set_message("3 of 5");
        assert!(screen.text().contains("3/5"), "{}", screen.text());
    }

    #[test]
    fn a_hidden_progress_does_nothing_and_runs_suspended_work() {
        let p = Progress::hidden();
        assert!(!p.is_visible());
        p.inc(3);
        p.set_length(9);
        p.set_position(4);
        p.set_message("nothing");
        assert_eq!(p.suspend(|| 42), 42);
        p.finish();
    }

    #[test]
    fn dropping_an_unfinished_bar_clears_it() {
        let screen = Screen::default();
        let p = Progress::on(Some(ProgressDrawTarget::term_like(Box::new(screen.clone()))), Some(4), "x");
        p.inc(1);
        drop(p);
        assert!(screen.text().ends_with("<clear>"), "{}", screen.text());
    }
}
