//! Runs the small Redis operations of many messages in flight as one call.
//!
//! Each message in a sender asks Redis the same few things (its gate and
//! lease, the sending policy, its sent record), and with dozens of messages
//! in flight those asks arrive together. A [`Coalescer`] queues them; its
//! task takes everything queued (up to a maximum) and answers it with one
//! script call, so a busy sender makes a few round trips for many messages
//! instead of one each, and Redis parses one command instead of many. No
//! ask waits for a timer: while one call is out, the next asks gather, and
//! an ask that finds the task idle goes out alone at once.

use std::future::Future;

use mailpipe_state::store::StoreError;
use tokio::sync::{mpsc, oneshot};

type Reply<O> = oneshot::Sender<Result<O, StoreError>>;

/// A queue of asks, answered together.
pub struct Coalescer<I, O> {
    tx: mpsc::UnboundedSender<(I, Reply<O>)>,
}

impl<I: Send + 'static, O: Send + 'static> Coalescer<I, O> {
    /// Starts the task that answers asks with `run`, at most `max` per call.
    /// `run` gets the asks in the order they came and returns one answer
    /// for each, in the same order. The task ends when the coalescer is
    /// dropped.
    pub fn start<F, Fut>(max: usize, run: F) -> Self
    where
        F: Fn(Vec<I>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<Vec<O>, StoreError>> + Send,
    {
        let (tx, mut rx) = mpsc::unbounded_channel::<(I, Reply<O>)>();
        tokio::spawn(async move {
            let mut queued = Vec::with_capacity(max);
            while rx.recv_many(&mut queued, max.max(1)).await > 0 {
                let (asks, replies): (Vec<I>, Vec<Reply<O>>) = queued.drain(..).unzip();
                match run(asks).await {
                    Ok(answers) => {
                        // A short answer leaves the rest without one: their
                        // callers see an error (see `ask`).
                        for (reply, answer) in replies.into_iter().zip(answers) {
                            let _ = reply.send(Ok(answer));
                        }
                    }
                    Err(e) => {
                        let detail = e.to_string();
                        for reply in replies {
                            let _ = reply.send(Err(StoreError::Shared(detail.clone())));
                        }
                    }
                }
            }
        });
        Self { tx }
    }

    /// Queues several asks one after the other, so that they go in one
    /// call (unless the call's maximum splits them), and waits for each
    /// one's answer.
    pub async fn ask_many(&self, items: Vec<I>) -> Vec<Result<O, StoreError>> {
        let answers: Vec<_> = items
            .into_iter()
            .map(|item| {
                let (reply, answer) = oneshot::channel();
                self.tx.send((item, reply)).ok();
                answer
            })
            .collect();
        let mut out = Vec::with_capacity(answers.len());
        for answer in answers {
            out.push(answer.await.unwrap_or_else(|_| {
                Err(StoreError::Shared(
                    "Redis gave no answer for this message".into(),
                ))
            }));
        }
        out
    }

    /// Queues one ask and waits for its answer.
    pub async fn ask(&self, item: I) -> Result<O, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send((item, reply))
            .map_err(|_| StoreError::Shared("the Redis batching task has stopped".into()))?;
        answer
            .await
            .map_err(|_| StoreError::Shared("Redis gave no answer for this message".into()))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[tokio::test]
    async fn asks_made_while_a_call_is_out_go_together_and_each_gets_its_own_answer() {
        let calls: Arc<Mutex<Vec<Vec<u32>>>> = Arc::default();
        let seen = calls.clone();
        let c = Arc::new(Coalescer::start(64, move |asks: Vec<u32>| {
            seen.lock().unwrap().push(asks.clone());
            async move {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                Ok(asks.iter().map(|a| a * 10).collect())
            }
        }));
        let mut tasks = Vec::new();
        for i in 0..20u32 {
            let c = c.clone();
            tasks.push(tokio::spawn(async move { c.ask(i).await.unwrap() }));
            tokio::task::yield_now().await;
        }
        for (i, t) in tasks.into_iter().enumerate() {
            assert_eq!(t.await.unwrap(), i as u32 * 10);
        }
        let calls = calls.lock().unwrap();
        assert!(calls.len() < 20, "one call per ask: {calls:?}");
        assert_eq!(calls.iter().flatten().count(), 20);
    }

    #[tokio::test]
    async fn asks_queued_together_go_in_one_call_in_their_order() {
        let calls: Arc<Mutex<Vec<Vec<u32>>>> = Arc::default();
        let seen = calls.clone();
        let c = Coalescer::start(64, move |asks: Vec<u32>| {
            seen.lock().unwrap().push(asks.clone());
            async move { Ok(asks.iter().map(|a| a + 1).collect()) }
        });
        let answers: Vec<u32> = c
            .ask_many(vec![1, 2, 3])
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
        assert_eq!(answers, [2, 3, 4]);
        assert_eq!(*calls.lock().unwrap(), [vec![1, 2, 3]]);
    }

    #[tokio::test]
    async fn a_failed_call_fails_every_ask_in_it_and_a_short_answer_fails_the_rest() {
        let c = Coalescer::start(8, |asks: Vec<u32>| async move {
            if asks.contains(&0) {
                Err(StoreError::Shared("redis went away".into()))
            } else {
                Ok(Vec::<u32>::new())
            }
        });
        let e = c.ask(0).await.unwrap_err();
        assert!(e.to_string().contains("redis went away"), "{e}");
        let e = c.ask(1).await.unwrap_err();
        assert!(e.to_string().contains("no answer"), "{e}");
    }
}
