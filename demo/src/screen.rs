//! What the demo prints: on a terminal, a live `kubectl wave plan` view redrawn in place
//! with the latest events under it; otherwise (and with `--ci`) one log line per event,
//! and the whole view every [`VIEW_EVERY`].

use std::{
    collections::VecDeque,
    fmt::Write as _,
    io::Write as _,
    time::{Duration, Instant},
};

use jiff::SignedDuration;
use switchyard::cli::{Style, Tone, span};

/// At most this many redraws a second on a terminal.
const REDRAW_EVERY: Duration = Duration::from_millis(250);
/// In log mode, the whole plan view this often.
pub const VIEW_EVERY: Duration = Duration::from_secs(15);
/// Events kept for the live view.
const RECENT: usize = 200;

/// How the demo prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// A terminal: colors, the view redrawn in place.
    Live,
    /// Plain lines, for CI and pipes.
    Log,
}

/// The demo's output.
pub struct Screen {
    mode: Mode,
    style: Style,
    started: Instant,
    recent: VecDeque<(Option<Tone>, String)>,
    last_draw: Option<Instant>,
    last_view: Option<Instant>,
    dirty: bool,
    drawing: bool,
    /// The latest plan view, plain, for a message when the demo stops early.
    pub latest_view: Option<String>,
    /// What the demo waits for now, in a few words.
    pub waiting_for: String,
}

impl Screen {
    /// A screen in `mode`, counting time from `started`.
    pub fn new(mode: Mode, started: Instant) -> Self {
        Screen {
            mode,
            style: if mode == Mode::Live {
                Style::for_terminal(true)
            } else {
                Style::PLAIN
            },
            started,
            recent: VecDeque::new(),
            last_draw: None,
            last_view: None,
            dirty: false,
            drawing: false,
            latest_view: None,
            waiting_for: "the demo to start".into(),
        }
    }

    /// The mode.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The style for text the caller paints.
    pub fn style(&self) -> Style {
        self.style
    }

    /// Time since the demo started, `+1m05s`.
    pub fn elapsed(&self) -> String {
        format!("+{}", since(self.started))
    }

    /// A setup line, printed as is (before the live view takes over the screen).
    pub fn say(&mut self, text: &str) {
        self.stop_drawing();
        println!("{text}");
    }

    /// A setup line in `tone`.
    pub fn say_in(&mut self, tone: Tone, text: &str) {
        let painted = self.style.paint(tone, text);
        self.say(&painted);
    }

    /// Something that happened while the plan runs: a log line, or a line under the view.
    pub fn event(&mut self, text: &str) {
        self.record(None, text);
    }

    /// An event in `tone`.
    pub fn event_in(&mut self, tone: Tone, text: &str) {
        self.record(Some(tone), text);
    }

    fn record(&mut self, tone: Option<Tone>, text: &str) {
        let line = format!("[{}] {text}", self.elapsed());
        match self.mode {
            Mode::Log => println!("{line}"),
            Mode::Live => {
                self.recent.push_back((tone, line));
                while self.recent.len() > RECENT {
                    self.recent.pop_front();
                }
                self.dirty = true;
            }
        }
    }

    /// Shows the plan view: on a terminal redrawn at most a few times a second (or when
    /// something changed), in log mode every [`VIEW_EVERY`] or when `force`d.
    pub fn show(&mut self, header: &str, view: impl Fn(Style) -> String, force: bool) {
        let now = Instant::now();
        match self.mode {
            Mode::Log => {
                let due = self
                    .last_view
                    .is_none_or(|at| now.duration_since(at) >= VIEW_EVERY);
                let plain = view(Style::PLAIN);
                if due || force {
                    println!("---- {header} ({}) ----\n{}----", self.elapsed(), plain);
                    self.last_view = Some(now);
                }
                self.latest_view = Some(plain);
            }
            Mode::Live => {
                let due = self
                    .last_draw
                    .is_none_or(|at| now.duration_since(at) >= REDRAW_EVERY);
                if !(due || (force && self.dirty)) {
                    return;
                }
                self.latest_view = Some(view(Style::PLAIN));
                let frame = self.frame(header, &view(self.style));
                let mut out = std::io::stdout().lock();
                if !self.drawing {
                    // Scroll what was printed so far into the scrollback, then take the screen.
                    let rows = terminal_size().map_or(40, |(_, rows)| rows);
                    let _ = write!(out, "{}\x1b[?25l", "\n".repeat(rows));
                }
                let _ = write!(out, "\x1b[H{frame}\x1b[J");
                let _ = out.flush();
                self.drawing = true;
                self.dirty = false;
                self.last_draw = Some(now);
            }
        }
    }

    fn frame(&self, header: &str, view: &str) -> String {
        let (width, height) = terminal_size().unwrap_or((100, 40));
        let mut lines: Vec<String> = Vec::new();
        lines.push(self.style.paint(
            Tone::Bold,
            &format!("{header} · {} · Ctrl-C stops and cleans up", self.elapsed()),
        ));
        lines.extend(view.lines().map(str::to_owned));
        lines.push(String::new());
        let room = height.saturating_sub(lines.len() + 2);
        if room > 0 {
            lines.push(self.style.paint(Tone::Dim, "Recent:"));
            // Events wrap rather than lose their end (a rollback's cause is at the end).
            let mut recent: Vec<String> = Vec::new();
            for (tone, text) in self.recent.iter().rev() {
                let mut pieces = wrap(text, width.saturating_sub(1).max(20));
                pieces.reverse();
                for piece in pieces {
                    recent.push(match tone {
                        Some(tone) => self.style.paint(*tone, &piece),
                        None => piece,
                    });
                }
                if recent.len() >= room {
                    break;
                }
            }
            recent.truncate(room);
            recent.reverse();
            lines.extend(recent);
        }
        lines.truncate(height.saturating_sub(1).max(1));
        let mut out = String::new();
        for line in lines {
            let _ = writeln!(out, "{}\x1b[K", fit(&line, width.saturating_sub(1)));
        }
        out
    }

    /// Leaves the live view where it is, with the cursor under it.
    pub fn stop_drawing(&mut self) {
        if self.drawing {
            print!("\x1b[?25h");
            let _ = std::io::stdout().flush();
            self.drawing = false;
        }
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        self.stop_drawing();
    }
}

/// Time since `started`, as `1m05s`.
pub fn since(started: Instant) -> String {
    span(SignedDuration::try_from(started.elapsed()).unwrap_or_default())
}

/// Plain `text` in lines of at most `width` characters, continuation lines indented.
fn wrap(text: &str, width: usize) -> Vec<String> {
    const INDENT: &str = "    ";
    let mut lines = Vec::new();
    let mut current = String::new();
    let mut count = 0;
    for word in text.split(' ') {
        let len = word.chars().count();
        if count > 0 && count + 1 + len > width {
            lines.push(std::mem::take(&mut current));
            current.push_str(INDENT);
            count = INDENT.len();
        } else if count > 0 {
            current.push(' ');
            count += 1;
        }
        current.push_str(word);
        count += len;
    }
    lines.push(current);
    lines
}

/// `line` cut to `width` visible columns; ANSI escape sequences do not count and are kept.
fn fit(line: &str, width: usize) -> String {
    let mut out = String::with_capacity(line.len());
    let mut visible = 0;
    let mut chars = line.chars().peekable();
    let mut cut = false;
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            out.push(c);
            for e in chars.by_ref() {
                out.push(e);
                if e.is_ascii_alphabetic() {
                    break;
                }
            }
            continue;
        }
        if visible >= width {
            cut = true;
            continue;
        }
        out.push(c);
        visible += 1;
    }
    if cut {
        out.push_str("\x1b[0m");
    }
    out
}

/// The terminal's (columns, rows), when stdout is one.
fn terminal_size() -> Option<(usize, usize)> {
    // SAFETY: TIOCGWINSZ writes a winsize into the struct we own; nothing else is touched.
    let mut size: libc::winsize = unsafe { std::mem::zeroed() };
    let result = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut size) };
    (result == 0 && size.ws_col > 0 && size.ws_row > 0)
        .then(|| (usize::from(size.ws_col), usize::from(size.ws_row)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_wrap_at_words() {
        assert_eq!(wrap("ab cd ef", 5), ["ab cd", "    ef"]);
        assert_eq!(wrap("abcdefgh", 4), ["abcdefgh"]);
        assert_eq!(wrap("", 4), [""]);
    }

    #[test]
    fn lines_are_cut_by_what_shows() {
        assert_eq!(fit("abcdef", 4), "abcd\x1b[0m");
        assert_eq!(fit("\x1b[31mab\x1b[0mcd", 3), "\x1b[31mab\x1b[0mc\x1b[0m");
        assert_eq!(fit("└─ x", 10), "└─ x");
    }
}
