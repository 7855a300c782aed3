//! A recording [`Handler`] shared by the scenarios.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use mailpipe_intake::{Handler, Inbound, Temporary};

/// Records every mail it accepts; refuses recipients whose local part
/// starts with `unknown`; fails temporarily while `fail` is set, or for
/// mails containing `fail_marker`.
#[derive(Default)]
pub struct Recorder {
    // A std Mutex: held for a push or a clone, never across an await.
    mails: Mutex<Vec<Inbound>>,
    fail: AtomicBool,
    fail_marker: Mutex<Option<Vec<u8>>>,
    /// Calls of `accept`, failed ones included.
    attempts: Mutex<usize>,
}

impl Recorder {
    pub fn mails(&self) -> Vec<Inbound> {
        self.mails.lock().unwrap().clone()
    }

    pub fn data(&self) -> Vec<Vec<u8>> {
        self.mails().into_iter().map(|m| m.data).collect()
    }

    pub fn set_failing(&self, fail: bool) {
        self.fail.store(fail, Ordering::SeqCst);
    }

    /// Fails temporarily for every mail containing `marker` (`None`: for
    /// none).
    pub fn fail_on(&self, marker: Option<&[u8]>) {
        *self.fail_marker.lock().unwrap() = marker.map(<[u8]>::to_vec);
    }

    pub fn attempts(&self) -> usize {
        *self.attempts.lock().unwrap()
    }
}

impl Handler for Recorder {
    fn accepts_recipient(&self, address: &str) -> Result<(), String> {
        if address.starts_with("unknown") {
            Err(format!("<{address}>: Recipient address rejected"))
        } else {
            Ok(())
        }
    }

    async fn accept(&self, mail: Inbound) -> Result<(), Temporary> {
        *self.attempts.lock().unwrap() += 1;
        if self.fail.load(Ordering::SeqCst) {
            return Err(Temporary("the test says no".into()));
        }
        let marked = self
            .fail_marker
            .lock()
            .unwrap()
            .as_ref()
            .is_some_and(|m| mail.data.windows(m.len()).any(|w| w == m.as_slice()));
        if marked {
            return Err(Temporary("the test says no to this one".into()));
        }
        self.mails.lock().unwrap().push(mail);
        Ok(())
    }
}
