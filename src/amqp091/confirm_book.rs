//! Which publish a basic.return belongs to.
//!
//! With publisher confirms and `mandatory`, RabbitMQ answers an unroutable publish with a
//! basic.return followed by the basic.ack that covers it. The return names no delivery tag, and
//! the ack may be `multiple`, covering many publishes at once: lapin then hands the returned
//! message to whichever covered publish it completes first. So the confirm a returned message
//! arrives with is not always its own.
//!
//! The book keeps every publish of one channel from the moment it is queued until its verdict
//! is taken. A returned message goes to the book's strays whatever confirm it came with, and a
//! publish claims a stray that holds what it sent. It may do so only once every confirm
//! completed before its own has been looked at (the one carrying its return was completed
//! first): a publish whose confirm was seen after the last sweep of the book sweeps it again.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use futures::future::BoxFuture;
use lapin::message::BasicReturnMessage;
use lapin::types::ShortString;
use lapin::{Confirmation, PublisherConfirm};

/// What one publish sent: enough to know its returned message again.
pub struct Published {
    pub exchange: ShortString,
    pub routing_key: ShortString,
    pub body: Bytes,
}

impl Published {
    fn owns(&self, returned: &BasicReturnMessage) -> bool {
        let delivery = &returned.delivery;
        delivery.exchange == self.exchange
            && delivery.routing_key == self.routing_key
            && delivery.data == *self.body
    }
}

/// The broker's verdict on one publish, its own returned message (if any) attached.
pub type Verdict = lapin::Result<Confirmation>;

/// The rest of a publish once its frames are queued: writing them, then the confirm.
pub type Writing = BoxFuture<'static, lapin::Result<PublisherConfirm>>;

/// The publishes of one channel whose verdict is not taken yet.
#[derive(Default)]
pub struct ConfirmBook {
    inner: Mutex<Book>,
}

#[derive(Default)]
struct Book {
    next: u64,
    /// Counts sweeps started; a verdict seen at sweep `n` is final once a sweep `n + 1` began.
    sweeps: u64,
    entries: HashMap<u64, Entry>,
    strays: Vec<BasicReturnMessage>,
}

struct Entry {
    state: State,
    published: Published,
    waker: Option<Waker>,
}

enum State {
    Writing(Writing),
    Confirming(PublisherConfirm),
    /// The verdict, its returned message moved to the strays, and the sweep it was seen at.
    /// The error is boxed: it is rare, and inline it would double every waiting publish.
    Seen(Result<Answer, Box<lapin::Error>>, u64),
}

/// A confirm without its returned message.
#[derive(Clone, Copy)]
enum Answer {
    Ack,
    Nack,
    NotRequested,
}

impl ConfirmBook {
    /// Enters a publish whose frames are queued; the future resolves to its verdict.
    pub fn enter(self: &Arc<Self>, writing: Writing, published: Published) -> Claim {
        let mut book = self.lock();
        let id = book.next;
        book.next += 1;
        let entry = Entry { state: State::Writing(writing), published, waker: None };
        book.entries.insert(id, entry);
        Claim { book: self.clone(), id }
    }

    fn lock(&self) -> MutexGuard<'_, Book> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Book {
    /// Polls every publish still waiting, so each verdict lapin completed is seen.
    fn sweep(&mut self, cx: &Context<'_>) {
        self.sweeps += 1;
        let sweep = self.sweeps;
        let mut strays = Vec::new();
        for entry in self.entries.values_mut() {
            let waker = entry.waker.clone().unwrap_or_else(|| cx.waker().clone());
            let mut own = Context::from_waker(&waker);
            if let Some(returned) = entry.advance(&mut own, sweep) {
                strays.push(returned);
                waker.wake_by_ref();
            } else if matches!(entry.state, State::Seen(..)) {
                waker.wake_by_ref();
            }
        }
        self.strays.append(&mut strays);
    }

    /// The verdict of a publish whose confirm was seen before the last sweep began.
    fn take(&mut self, id: u64) -> Option<Verdict> {
        let entry = self.entries.remove(&id)?;
        let State::Seen(verdict, _) = entry.state else {
            self.entries.insert(id, entry);
            return None;
        };
        let own = self.strays.iter().position(|r| entry.published.owns(r));
        let own = own.map(|at| self.strays.swap_remove(at));
        if self.entries.is_empty() && !self.strays.is_empty() {
            // Its publish was given up (the bridge stopped) before its verdict was taken.
            tracing::warn!(
                count = self.strays.len(),
                "Returned messages matched no publish waiting for its confirm"
            );
            self.strays.clear();
        }
        Some(match verdict {
            Ok(Answer::Ack) => Ok(Confirmation::Ack(own)),
            Ok(Answer::Nack) => Ok(Confirmation::Nack(own)),
            Ok(Answer::NotRequested) => Ok(Confirmation::NotRequested),
            Err(error) => Err(*error),
        })
    }
}

impl Entry {
    /// Moves the publish on as far as it goes; a returned message it carried is handed back.
    fn advance(&mut self, cx: &mut Context<'_>, sweep: u64) -> Option<BasicReturnMessage> {
        if let State::Writing(writing) = &mut self.state {
            match writing.as_mut().poll(cx) {
                Poll::Pending => return None,
                Poll::Ready(Ok(confirm)) => self.state = State::Confirming(confirm),
                Poll::Ready(Err(error)) => self.state = State::Seen(Err(Box::new(error)), sweep),
            }
        }
        let State::Confirming(confirm) = &mut self.state else { return None };
        let Poll::Ready(verdict) = Pin::new(confirm).poll(cx) else { return None };
        let (verdict, returned) = match verdict {
            Ok(Confirmation::Ack(returned)) => (Ok(Answer::Ack), returned),
            Ok(Confirmation::Nack(returned)) => (Ok(Answer::Nack), returned),
            Ok(Confirmation::NotRequested) => (Ok(Answer::NotRequested), None),
            Err(error) => (Err(Box::new(error)), None),
        };
        self.state = State::Seen(verdict, sweep);
        returned
    }
}

/// One publish's claim on its verdict. Dropping it forgets the publish.
pub struct Claim {
    book: Arc<ConfirmBook>,
    id: u64,
}

impl Future for Claim {
    type Output = Verdict;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Verdict> {
        let mut book = self.book.lock();
        let book = &mut *book;
        let sweeps = book.sweeps;
        let Some(entry) = book.entries.get_mut(&self.id) else {
            return Poll::Ready(Err(lapin::ErrorKind::FutureCompleted.into()));
        };
        if !entry.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            entry.waker = Some(cx.waker().clone());
        }
        if let Some(returned) = entry.advance(cx, sweeps) {
            book.strays.push(returned);
        }
        match entry.state {
            State::Seen(_, seen) if seen < sweeps => {}
            State::Seen(..) => book.sweep(cx),
            _ => return Poll::Pending,
        }
        match book.take(self.id) {
            Some(verdict) => Poll::Ready(verdict),
            None => Poll::Pending,
        }
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.book.lock().entries.remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_waiting_publish_stays_small() {
        // One entry per publish awaiting its verdict: 10 000 in flight make 10 000 of them.
        let size = std::mem::size_of::<Entry>();
        assert!(size <= 136, "a book entry grew to {size} bytes");
    }
}
