//! The home of actix actors in a tokio process: an actix `System` on its own thread. Actors are
//! started there and their `Addr`s handed back, so tokio tasks (tonic, axum, etcd) talk to them
//! through `Addr::send`, which is runtime-agnostic. Blocking work (fsync, Parquet writes) runs in
//! actors started on a `SyncArbiter`.

use std::sync::mpsc;

/// A running actix system on a dedicated thread.
pub struct ActorHome {
    system: actix::System,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ActorHome {
    /// Starts the actix system thread.
    pub fn start(name: &str) -> Self {
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name(format!("actix-{name}"))
            .spawn(move || {
                let sys = actix::System::new();
                tx.send(actix::System::current())
                    .expect("send system handle");
                sys.run().ok();
            })
            .expect("spawn actix thread");
        let system = rx.recv().expect("actix system started");
        Self {
            system,
            thread: Some(thread),
        }
    }

    /// Runs `f` on the actix system thread (where actors may be started) and returns its result.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = mpsc::channel();
        self.system.arbiter().spawn_fn(move || {
            let _ = tx.send(f());
        });
        rx.recv().expect("actix system is running")
    }
}

impl Drop for ActorHome {
    fn drop(&mut self) {
        self.system.stop();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
