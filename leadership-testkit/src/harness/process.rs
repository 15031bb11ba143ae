//! Child-process plumbing shared by the server harnesses.

use std::ffi::OsString;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Why a harness could not start or control its server.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    /// The server binary is not on `PATH` (or where the override variable points).
    #[error(
        "{binary} not found: install it with `{install}` (or set {env_var} to its path); \
         tests that need it fail rather than skip"
    )]
    MissingBinary {
        /// The binary looked for.
        binary: String,
        /// The environment variable that overrides its location.
        env_var: &'static str,
        /// The command that installs it on Debian.
        install: &'static str,
    },
    /// Starting, signalling or waiting for the process failed.
    #[error("{what}")]
    Io {
        /// What the harness was doing.
        what: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The server did not become ready in time.
    #[error("{what} was not ready after {waited:?}; its log ends with:\n{log_tail}")]
    NotReady {
        /// Which server.
        what: String,
        /// How long the harness waited.
        waited: Duration,
        /// The tail of the server's log, if any.
        log_tail: String,
    },
}

impl HarnessError {
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        HarnessError::Io {
            what: what.into(),
            source,
        }
    }
}

/// A free TCP port on 127.0.0.1, as the OS hands it out.
///
/// The port is released before returning, so another process could take it in between; the
/// harnesses check that the server which answers is their own.
///
/// # Errors
/// If no loopback socket can be bound.
pub fn free_port() -> Result<u16, HarnessError> {
    let listener = TcpListener::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0))
        .map_err(|e| HarnessError::io("binding a loopback port", e))?;
    listener
        .local_addr()
        .map(|addr| addr.port())
        .map_err(|e| HarnessError::io("reading a bound port", e))
}

/// Polls `ready` every 20 ms until it returns true or `timeout` passes.
pub fn wait_until(timeout: Duration, mut ready: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if ready() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Finds a server binary: `$env_var` if set, else `name` on `PATH`.
///
/// # Errors
/// [`HarnessError::MissingBinary`] with the install command.
pub fn find_binary(
    name: &str,
    env_var: &'static str,
    install: &'static str,
) -> Result<PathBuf, HarnessError> {
    let missing = || HarnessError::MissingBinary {
        binary: name.to_owned(),
        env_var,
        install,
    };
    if let Some(path) = std::env::var_os(env_var) {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(missing())
        };
    }
    let paths = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&paths)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
        .ok_or_else(missing)
}

/// One server child process with its log file, killed (SIGKILL) when dropped, and also once
/// the test process is gone: tests keep shared servers in statics, which are never dropped,
/// so a watchdog (`sh`, polling both pids) SIGKILLs the server when its test process exits,
/// and then removes the server's directory if it has one ([`ServerProcess::spawn_in`]): a
/// static's temporary directory is never dropped either. The watchdog outlives a kill of the
/// server by the test, so a server killed and never started again still loses its
/// directory when the test process exits.
#[derive(Debug)]
pub struct ServerProcess {
    name: String,
    binary: PathBuf,
    args: Vec<OsString>,
    log_path: PathBuf,
    child: Option<Child>,
    watchdog: Option<Child>,
    /// Removed by the watchdog once the test process is gone.
    owned_dir: Option<PathBuf>,
}

impl ServerProcess {
    /// Starts `binary args…` with stdout and stderr appended to `log_path`.
    ///
    /// # Errors
    /// If the log cannot be opened or the process cannot be spawned.
    pub fn spawn(
        name: impl Into<String>,
        binary: &Path,
        args: Vec<OsString>,
        log_path: PathBuf,
    ) -> Result<Self, HarnessError> {
        Self::launch(name.into(), binary, args, log_path, None)
    }

    /// [`ServerProcess::spawn`] for a server whose files live in `dir` (its temporary
    /// directory), with its log at `dir/log_name`. Once the test process is gone, the
    /// watchdog kills the server and then removes `dir`, which a server kept in a static
    /// never does. While the test process runs, `dir` is left alone, even if the server dies
    /// (a test may start it again on the same data).
    ///
    /// # Errors
    /// As [`ServerProcess::spawn`].
    pub fn spawn_in(
        name: impl Into<String>,
        binary: &Path,
        args: Vec<OsString>,
        dir: &Path,
        log_name: &str,
    ) -> Result<Self, HarnessError> {
        Self::launch(
            name.into(),
            binary,
            args,
            dir.join(log_name),
            Some(dir.to_owned()),
        )
    }

    fn launch(
        name: String,
        binary: &Path,
        args: Vec<OsString>,
        log_path: PathBuf,
        owned_dir: Option<PathBuf>,
    ) -> Result<Self, HarnessError> {
        let mut process = ServerProcess {
            name,
            binary: binary.to_owned(),
            args,
            log_path,
            child: None,
            watchdog: None,
            owned_dir,
        };
        process.start()?;
        Ok(process)
    }

    fn start(&mut self) -> Result<(), HarnessError> {
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .map_err(|e| HarnessError::io(format!("opening {}", self.log_path.display()), e))?;
        let log_err = log
            .try_clone()
            .map_err(|e| HarnessError::io("duplicating the log handle", e))?;
        let child = Command::new(&self.binary)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .map_err(|e| HarnessError::io(format!("starting {}", self.binary.display()), e))?;
        self.guard(child.id());
        self.child = Some(child);
        Ok(())
    }

    /// Starts the watchdog of server `pid` (see the type's docs); best effort.
    fn guard(&mut self, pid: u32) {
        self.unguard();
        // `$1` is the directory to remove, or empty. The server's pid is forgotten once it
        // has exited, so that a later kill cannot hit a process that reused it.
        let script = format!(
            "s={pid}; \
             while kill -0 {parent} 2>/dev/null; do \
               if [ -n \"$s\" ] && ! kill -0 \"$s\" 2>/dev/null; then s=; fi; \
               if [ -z \"$s\" ] && [ -z \"$1\" ]; then exit 0; fi; \
               sleep 0.5; \
             done; \
             if [ -n \"$s\" ]; then kill -9 \"$s\" 2>/dev/null; fi; \
             if [ -n \"$1\" ]; then rm -rf -- \"$1\"; fi",
            parent = std::process::id()
        );
        let dir = self.owned_dir.clone().unwrap_or_default();
        self.watchdog = Command::new("sh")
            .args(["-c", &script, "watchdog"])
            .arg(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok();
    }

    fn unguard(&mut self) {
        if let Some(mut watchdog) = self.watchdog.take() {
            let _ = watchdog.kill();
            let _ = watchdog.wait();
        }
    }

    /// The process id of the running child, if any.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// True while the child has not exited.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    fn signal(&self, signal: Signal) -> Result<(), HarnessError> {
        let Some(pid) = self.pid() else {
            return Ok(());
        };
        let pid = i32::try_from(pid).map_err(|_| {
            HarnessError::io("pid out of range", std::io::Error::other("pid overflow"))
        })?;
        kill(Pid::from_raw(pid), signal)
            .map_err(|e| HarnessError::io(format!("sending {signal} to {}", self.name), e.into()))
    }

    /// SIGKILL and reap: the server dies without a chance to save anything.
    ///
    /// # Errors
    /// If the process cannot be signalled or reaped.
    pub fn kill9(&mut self) -> Result<(), HarnessError> {
        // The watchdog stays: it forgets the dead server's pid and still removes the
        // directory once the test process is gone.
        // A paused process still dies on SIGKILL.
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            child
                .wait()
                .map_err(|e| HarnessError::io(format!("reaping {}", self.name), e))?;
        }
        Ok(())
    }

    /// SIGSTOP: the server keeps its sockets but answers nothing. Returns once the kernel
    /// reports the process stopped (a signal is delivered asynchronously), so a test that
    /// pauses and then expects silence really meets a stopped server.
    ///
    /// # Errors
    /// If the process cannot be signalled, or is not seen stopped within 2 s.
    pub fn pause(&self) -> Result<(), HarnessError> {
        self.signal(Signal::SIGSTOP)?;
        let Some(pid) = self.pid() else {
            return Ok(());
        };
        if wait_until(Duration::from_secs(2), || is_stopped(pid)) {
            Ok(())
        } else {
            Err(HarnessError::io(
                format!("pausing {}", self.name),
                std::io::Error::other("the process was not seen stopped within 2 s"),
            ))
        }
    }

    /// SIGCONT after [`ServerProcess::pause`].
    ///
    /// # Errors
    /// If the process cannot be signalled.
    pub fn resume(&self) -> Result<(), HarnessError> {
        self.signal(Signal::SIGCONT)
    }

    /// Kills the process if it runs, then starts it again with the same arguments (and so on
    /// the same data directory and port).
    ///
    /// # Errors
    /// If it cannot be killed or started.
    pub fn restart(&mut self) -> Result<(), HarnessError> {
        self.kill9()?;
        self.start()
    }

    /// Starts the process again after [`ServerProcess::kill9`]; a no-op if it runs.
    ///
    /// # Errors
    /// If it cannot be started.
    pub fn start_again(&mut self) -> Result<(), HarnessError> {
        if self.is_running() {
            return Ok(());
        }
        self.start()
    }

    /// The last `bytes` of the server's log, for error messages.
    pub fn log_tail(&self, bytes: u64) -> String {
        let Ok(mut file) = File::open(&self.log_path) else {
            return String::new();
        };
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        let _ = file.seek(SeekFrom::Start(len.saturating_sub(bytes)));
        let mut tail = String::new();
        let _ = file.read_to_string(&mut tail);
        tail
    }

    /// A [`HarnessError::NotReady`] for this server.
    pub fn not_ready(&self, waited: Duration) -> HarnessError {
        HarnessError::NotReady {
            what: self.name.clone(),
            waited,
            log_tail: self.log_tail(2048),
        }
    }
}

/// The fields of `/proc/<pid>/stat` after the command name (which is in parentheses and may
/// hold spaces): index 0 is the state (the line's field 3).
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

/// True if `/proc/<pid>/stat` shows the process stopped (`T`) or traced (`t`).
fn is_stopped(pid: u32) -> bool {
    stat_fields(pid)
        .and_then(|fields| fields.first().cloned())
        .is_some_and(|state| state == "T" || state == "t")
}

/// User plus system CPU time process `pid` has used so far, from `/proc/<pid>/stat`, in
/// clock ticks of 10 ms (Linux's `USER_HZ` is 100); `None` if it cannot be read (no such
/// process, or not Linux). For a server's cost per operation beside a client's, e.g.
/// `cpu_time(server.pid()?)` before and after a measured phase.
pub fn cpu_time(pid: u32) -> Option<Duration> {
    let fields = stat_fields(pid)?;
    // utime and stime are the line's fields 14 and 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(Duration::from_millis((utime + stime) * 10))
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.unguard();
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
