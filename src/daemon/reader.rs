//! The query thread: answers read-only calls from one long-lived sysroot handle.
//!
//! libostree objects cannot cross threads, so connection threads send closures
//! here and wait for the answer. The sysroot is opened on first use (never at
//! start-up, so activation stays fast) and re-read only when it changed on
//! disk. Transactions run elsewhere, so status keeps answering while one runs.

use std::path::PathBuf;
use std::sync::mpsc;
use std::thread;

use crate::error::Error;
use crate::sysroot::Sysroot;

type Job = Box<dyn FnOnce(&mut State) + Send>;

struct State {
    path: PathBuf,
    sysroot: Option<Sysroot>,
}

#[derive(Clone)]
pub struct Reader {
    jobs: mpsc::Sender<Job>,
}

impl Reader {
    pub fn spawn(path: PathBuf) -> Reader {
        let (jobs, queue) = mpsc::channel::<Job>();
        thread::Builder::new()
            .name("query".into())
            .spawn(move || {
                let mut state = State {
                    path,
                    sysroot: None,
                };
                for job in queue {
                    job(&mut state);
                }
            })
            .expect("spawning the query thread");
        Reader { jobs }
    }

    /// Run `f` on the query thread's sysroot and wait for its answer.
    pub fn query<T, F>(&self, f: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce(&mut Sysroot) -> anyhow::Result<T> + Send + 'static,
    {
        let (answer, answered) = mpsc::sync_channel(1);
        let job: Job = Box::new(move |state: &mut State| {
            let result = match state.sysroot.as_mut() {
                Some(s) => f(s),
                None => Sysroot::open(&state.path).and_then(|s| f(state.sysroot.insert(s))),
            };
            let _ = answer.send(result.map_err(Error::classify));
        });
        self.jobs
            .send(job)
            .map_err(|_| Error::Other(anyhow::anyhow!("query thread is gone")))?;
        answered
            .recv()
            .map_err(|_| Error::Other(anyhow::anyhow!("query thread dropped the call")))?
    }

    /// Forget the open sysroot, so the next query opens it afresh.
    pub fn invalidate(&self) {
        let _ = self
            .jobs
            .send(Box::new(|state: &mut State| state.sysroot = None));
    }
}
