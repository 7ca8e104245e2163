//! A deadline that touches the timer wheel only when it fires.
//!
//! Arming a tokio timer for every request and dropping it when the request finishes costs an
//! allocation or two and a lock-protected insert and removal on the timer wheel, which
//! callgrind puts at about a thousand instructions a time. remedy's deadlines (the header read
//! timeout of a connector's connection, the response-head timeout of an upstream connection,
//! the idle timeout of a streaming body) move forward with every request or chunk and almost
//! never pass, so one timer is kept armed at a deadline that is never later than the one that
//! counts; when it fires early it moves to the current deadline, so a busy connection re-arms
//! once per timeout period rather than once per request.

use std::pin::Pin;
use std::task::Context;

use tokio::time::{Instant, Sleep};

#[derive(Debug, Default)]
pub struct LazyDeadline(Option<Pin<Box<Sleep>>>);

impl LazyDeadline {
    /// Whether `deadline` has passed. When it has not, the task in `cx` is woken by the time
    /// it does (possibly earlier, once, to re-arm).
    pub fn poll_passed(&mut self, deadline: Instant, cx: &mut Context<'_>) -> bool {
        let timer = self
            .0
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if timer.deadline() > deadline {
            timer.as_mut().reset(deadline);
        }
        while timer.as_mut().poll(cx).is_ready() {
            if timer.deadline() >= deadline {
                return true;
            }
            timer.as_mut().reset(deadline);
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::poll_fn;
    use std::task::Poll;
    use std::time::Duration;

    /// Whether `deadline` has passed, after one poll.
    async fn passed(d: &mut LazyDeadline, deadline: Instant) -> bool {
        poll_fn(|cx| Poll::Ready(d.poll_passed(deadline, cx))).await
    }

    /// Polls until the deadline passes; returns how many times it was polled.
    async fn wait(d: &mut LazyDeadline, deadline: Instant) -> u32 {
        let mut polls = 0;
        poll_fn(|cx| {
            polls += 1;
            if d.poll_passed(deadline, cx) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await;
        polls
    }

    #[tokio::test(start_paused = true)]
    async fn an_early_timer_moves_to_the_later_deadline_and_fires_there() {
        let start = Instant::now();
        let mut d = LazyDeadline::default();
        // Armed for one deadline, which later requests push back without re-arming.
        assert!(!passed(&mut d, start + Duration::from_secs(1)).await);
        let later = start + Duration::from_secs(5);
        let polls = wait(&mut d, later).await;
        assert_eq!(Instant::now(), later);
        // First poll, the early fire at 1 s (re-armed), then the fire at 5 s.
        assert_eq!(polls, 3);
    }

    #[tokio::test(start_paused = true)]
    async fn an_earlier_deadline_pulls_the_timer_in() {
        let start = Instant::now();
        let mut d = LazyDeadline::default();
        assert!(!passed(&mut d, start + Duration::from_secs(9)).await);
        let sooner = start + Duration::from_secs(2);
        wait(&mut d, sooner).await;
        assert_eq!(Instant::now(), sooner);
    }

    #[tokio::test(start_paused = true)]
    async fn a_deadline_already_past_is_reported_at_once() {
        let mut d = LazyDeadline::default();
        tokio::time::advance(Duration::from_secs(3)).await;
        let past = Instant::now() - Duration::from_secs(1);
        assert!(passed(&mut d, past).await);
    }
}
