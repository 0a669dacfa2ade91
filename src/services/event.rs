//! The built-in services as message handlers, for the event policy: the
//! same [`Service`] replies, cut the same way (each read one request, or
//! each line for line services; each datagram one request), with `delay`
//! waiting on the loop's timer instead of sleeping.

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Framing, Service, ServiceFactory, MAX_LINE};
use crate::handler::{MessageFactory, MessageHandler, Next, Opening, Output};
use crate::request::RequestDeadline;

impl MessageFactory for ServiceFactory {
    fn open(
        &self,
        opening: &Opening<'_>,
        _out: &mut Output,
    ) -> io::Result<Box<dyn MessageHandler>> {
        Ok(Box::new(ServiceConn {
            service: Arc::clone(&self.service),
            stream: opening.is_stream(),
            held: Vec::new(),
            deadline: LineDeadline::new(opening.server().request_timeout),
        }))
    }
}

/// One connection's (or datagram's) handler.
struct ServiceConn {
    service: Arc<dyn Service>,
    stream: bool,
    /// The start of a line not finished yet (line services), or the
    /// request a delay holds; empty, and unallocated, otherwise.
    held: Vec<u8>,
    /// The request deadline of the line in `held` (line services).
    deadline: LineDeadline,
}

impl MessageHandler for ServiceConn {
    fn data(&mut self, input: &[u8], out: &mut Output) -> io::Result<Next> {
        if let Some(wait) = self.service.delay() {
            self.held.extend_from_slice(input);
            return Ok(Next::Wait(wait));
        }
        if self.stream && self.service.framing() == Framing::Line {
            return self.lines(input, out);
        }
        out.reply_with(|b| self.service.respond(input, self.stream, b));
        Ok(Next::Read)
    }

    fn timer(&mut self, out: &mut Output) -> io::Result<Next> {
        let held = std::mem::take(&mut self.held);
        out.reply_with(|b| self.service.respond_undelayed(&held, self.stream, b));
        Ok(Next::Read)
    }

    /// A line service answers a last line that ended without its `\n`,
    /// as the blocking policies' `read_line` does at end of input.
    fn end(&mut self, out: &mut Output) -> io::Result<Next> {
        if self.stream && self.service.framing() == Framing::Line && !self.held.is_empty() {
            let last = std::mem::take(&mut self.held);
            out.reply_with(|b| self.service.respond(&last, true, b));
        }
        Ok(Next::Close)
    }
}

impl ServiceConn {
    /// Each complete line is one request; the rest waits for its `\n`. A
    /// line longer than [`MAX_LINE`] gets an error and the connection is
    /// closed, as under the other policies. So is a line still incomplete
    /// past the request deadline when more of it arrives (the loop's idle
    /// timeout bounds a silence meanwhile).
    fn lines(&mut self, input: &[u8], out: &mut Output) -> io::Result<Next> {
        self.deadline.check()?;
        let mut rest = input;
        while let Some(i) = rest.iter().position(|&b| b == b'\n') {
            let (line, after) = rest.split_at(i + 1);
            rest = after;
            if self.held.len() + line.len() > MAX_LINE {
                return Ok(too_long(out));
            }
            self.deadline.finished();
            if self.held.is_empty() {
                out.reply_with(|b| self.service.respond(line, true, b));
            } else {
                self.held.extend_from_slice(line);
                let whole = std::mem::take(&mut self.held);
                out.reply_with(|b| self.service.respond(&whole, true, b));
            }
        }
        self.held.extend_from_slice(rest);
        if self.held.len() >= MAX_LINE {
            return Ok(too_long(out));
        }
        if !self.held.is_empty() {
            self.deadline.pending();
        }
        Ok(Next::Read)
    }
}

/// A line's request deadline as a message handler (event policy) keeps
/// it: the clock starts at an unfinished line's first byte and stops at
/// its end.
#[derive(Debug, Clone, Copy)]
pub(super) struct LineDeadline {
    limit: Option<Duration>,
    begun: Option<Instant>,
}

impl LineDeadline {
    /// No line yet; `limit` None: no deadline.
    pub(super) fn new(limit: Option<Duration>) -> LineDeadline {
        LineDeadline { limit, begun: None }
    }

    /// A line is unfinished: its clock runs from now unless it already does.
    pub(super) fn pending(&mut self) {
        self.begun.get_or_insert_with(Instant::now);
    }

    /// The line ended.
    pub(super) fn finished(&mut self) {
        self.begun = None;
    }

    /// Fails with [`RequestDeadline`] once an unfinished line is past it.
    pub(super) fn check(&self) -> io::Result<()> {
        match (self.limit, self.begun) {
            (Some(limit), Some(begun)) if begun.elapsed() >= limit => {
                Err(RequestDeadline(limit).error())
            }
            _ => Ok(()),
        }
    }
}

fn too_long(out: &mut Output) -> Next {
    out.send(format!("error: line longer than {MAX_LINE} bytes\n").as_bytes());
    Next::Close
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::services::Builtin;

    fn conn(service: Builtin, stream: bool) -> ServiceConn {
        ServiceConn {
            service: Arc::new(service),
            stream,
            held: Vec::new(),
            deadline: LineDeadline::new(Some(Duration::from_millis(50))),
        }
    }

    #[test]
    fn a_line_in_pieces_is_one_request_and_two_lines_in_one_read_are_two() {
        let mut c = conn(Builtin::Time, true);
        let mut out = Output::default();
        assert_eq!(c.data(b"%Y", &mut out).unwrap(), Next::Read);
        assert_eq!(out.replies(), 0);
        c.data(b"\n%H\n", &mut out).unwrap();
        let replies: Vec<&[u8]> = out.iter().collect();
        assert_eq!(replies.len(), 2, "{replies:?}");
        assert_eq!(replies[0].len(), 5, "a year and a newline: {replies:?}");
        assert!(c.held.is_empty() && c.held.capacity() == 0);
    }

    #[test]
    fn end_of_input_answers_a_last_unfinished_line() {
        let mut c = conn(Builtin::Time, true);
        let mut out = Output::default();
        c.data(b"a\nb", &mut out).unwrap();
        assert_eq!(out.replies(), 1);
        out.clear();
        assert_eq!(c.end(&mut out).unwrap(), Next::Close);
        let replies: Vec<&[u8]> = out.iter().collect();
        assert_eq!(replies, [b"b\n".as_slice()], "a literal format");
        out.clear();
        c.end(&mut out).unwrap();
        assert_eq!(out.replies(), 0, "nothing held, nothing sent");
    }

    #[test]
    fn an_over_long_line_gets_the_error_and_closes() {
        let mut c = conn(Builtin::Time, true);
        let mut out = Output::default();
        let next = c.data(&vec![b'%'; MAX_LINE + 1], &mut out).unwrap();
        assert_eq!(next, Next::Close);
        assert!(out.bytes().starts_with(b"error: line longer than"));
    }

    #[test]
    fn delay_waits_on_a_timer_then_echoes_what_it_held() {
        let mut c = conn(Builtin::Delay(Duration::from_secs(5)), true);
        let mut out = Output::default();
        let started = std::time::Instant::now();
        assert_eq!(
            c.data(b"later", &mut out).unwrap(),
            Next::Wait(Duration::from_secs(5))
        );
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "data() must not sleep"
        );
        assert_eq!(out.replies(), 0);
        assert_eq!(c.timer(&mut out).unwrap(), Next::Read);
        assert_eq!(out.bytes(), b"later");
    }

    #[test]
    fn a_line_trickling_past_the_request_deadline_fails_and_a_prompt_one_does_not() {
        let mut c = conn(Builtin::Time, true);
        let mut out = Output::default();
        assert_eq!(c.data(b"%Y", &mut out).unwrap(), Next::Read);
        assert_eq!(c.data(b"\n", &mut out).unwrap(), Next::Read);
        assert_eq!(out.replies(), 1);
        assert_eq!(c.data(b"%", &mut out).unwrap(), Next::Read);
        assert_eq!(c.data(b"H", &mut out).unwrap(), Next::Read);
        // The line began 60 ms ago, past its 50 ms deadline.
        c.deadline.begun = Some(Instant::now() - Duration::from_millis(60));
        let err = c.data(b"Y", &mut out).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(
            RequestDeadline::of(&err),
            Some(RequestDeadline(Duration::from_millis(50)))
        );
    }
}
