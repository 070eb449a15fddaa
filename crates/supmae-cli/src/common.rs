//! What every command shares: the error type, output that ends quietly on a closed pipe,
//! backend choice, number parsers and the `--model` flag.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

use supmae::burn::prelude::*;
use supmae::burn::tensor::backend::AutodiffBackend;
use supmae::{BackendError, BackendJob, BackendKind, run_on};
use supmae_model::{MaeConfig, VitConfig};
use supmae_train::TrainError;

/// A command-line error: one line for the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CliError(pub String);

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CliError {}

/// Shorthand for the commands' results.
pub type Result<T, E = CliError> = std::result::Result<T, E>;

/// Turns any displayable error into a [`CliError`], adding the flags that fix it where the
/// library's typed error says what is wrong (the library gives no command-line advice).
pub fn cli<T, E: fmt::Display + 'static>(r: Result<T, E>) -> Result<T> {
    r.map_err(|e| CliError(advise(&e)))
}

/// The message of `e`, with command-line advice for the typed errors that have some.
pub fn advise<E: fmt::Display + 'static>(e: &E) -> String {
    let any: &dyn std::any::Any = e;
    let train = any.downcast_ref::<TrainError>().or_else(|| {
        match any.downcast_ref::<supmae::EmbedError>() {
            Some(supmae::EmbedError::Train(t)) => Some(t),
            _ => None,
        }
    });
    match train {
        Some(TrainError::RunFolderInUse { .. }) => format!(
            "{e}: continue it with --resume, start afresh with --overwrite (deletes it), or \
             choose another folder (--out)"
        ),
        _ => e.to_string(),
    }
}

/// A [`CliError`] from a message.
pub fn err<T>(message: impl Into<String>) -> Result<T> {
    Err(CliError(message.into()))
}

/// Prints a line on stdout. When the reader has gone away (`supmae ... | head -1`), the
/// program ends quietly with success, as Unix tools do, instead of panicking.
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::common::say_line(format_args!($($arg)*))
    };
}
pub(crate) use say;

/// Prints a line on stderr in one write: under MPI the processes share the launcher's
/// stderr, and `eprintln!` may write a line in pieces that interleave with other ranks'.
macro_rules! note {
    ($($arg:tt)*) => {
        $crate::common::note_line(format_args!($($arg)*))
    };
}
pub(crate) use note;

/// The function behind [`note!`].
pub fn note_line(args: fmt::Arguments<'_>) {
    let line = format!("{args}\n");
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

/// The function behind [`say!`].
pub fn say_line(args: fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = out
        .write_fmt(args)
        .and_then(|()| out.write_all(b"\n"))
        .and_then(|()| out.flush())
    {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: cannot write to stdout: {e}");
        std::process::exit(1);
    }
}

/// A finite floating-point number (`NaN` and infinities are refused by name).
pub fn finite(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not a number"))?;
    if v.is_finite() {
        Ok(v)
    } else {
        Err(format!("`{s}` is not a finite number"))
    }
}

/// `--backend`.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct BackendArg {
    /// Backend: flex (CPU), wgpu, vulkan or cuda, if compiled in [default: the first
    /// compiled one that can start: cuda, vulkan, wgpu, then flex]
    #[arg(long, value_name = "NAME", value_parser = parse_backend)]
    pub backend: Option<BackendKind>,
}

fn parse_backend(s: &str) -> Result<BackendKind, String> {
    s.parse::<BackendKind>().map_err(|e| e.to_string())
}

/// Runs a tiny tensor computation: whether the backend really starts on this machine.
struct Probe;

impl BackendJob for Probe {
    type Output = ();

    fn run<B: AutodiffBackend>(self, device: B::Device) {
        let x = Tensor::<B, 1>::from_floats([1.0, 2.0], &device);
        let _ = (x * 2.0).into_data();
    }
}

/// Whether `kind` starts here; a backend whose runtime panics (no driver, no adapter)
/// counts as unavailable, with the panic's message as the reason.
fn probe(kind: BackendKind) -> Result<(), BackendError> {
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let outcome = std::panic::catch_unwind(|| run_on(kind, Probe));
    std::panic::set_hook(hook);
    match outcome {
        Ok(result) => result,
        Err(panic) => {
            let reason = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "its runtime failed to start".into());
            Err(BackendError::Unavailable {
                kind,
                reason: reason.lines().next().unwrap_or_default().to_string(),
            })
        }
    }
}

impl BackendArg {
    /// The backend to run on: the one asked for (an error if it cannot start), else the
    /// first compiled one that starts, saying in one line why a preferred one was skipped.
    pub fn resolve(&self) -> Result<BackendKind> {
        let compiled: Vec<BackendKind> = [
            BackendKind::Cuda,
            BackendKind::Vulkan,
            BackendKind::Wgpu,
            BackendKind::Flex,
        ]
        .into_iter()
        .filter(|k| k.is_compiled())
        .collect();
        let (kind, skipped) = choose(self.backend, &compiled, probe)?;
        for e in &skipped {
            eprintln!("note: {e}; using {kind}");
        }
        Ok(kind)
    }
}

/// `kind` as the commands print it: for the CPU backend with the CPU's model and the
/// instruction sets the kernels and the GEMM chose on it (speed differs about 2x between an
/// AVX2 and an AVX-512 CPU, so every log says which it had).
pub fn backend_label(kind: BackendKind) -> String {
    if kind == BackendKind::Flex {
        format!("{kind} ({})", supmae_model::kernels::cpu_isa())
    } else {
        kind.to_string()
    }
}

/// The backend asked for (`Err` if it does not start), or the first of `preference` that
/// `starts`, with the reasons the earlier ones were skipped.
fn choose(
    asked: Option<BackendKind>,
    preference: &[BackendKind],
    starts: impl Fn(BackendKind) -> Result<(), BackendError>,
) -> Result<(BackendKind, Vec<BackendError>)> {
    if let Some(kind) = asked {
        cli(starts(kind))?;
        return Ok((kind, Vec::new()));
    }
    let mut skipped = Vec::new();
    for &kind in preference {
        match starts(kind) {
            Ok(()) => return Ok((kind, skipped)),
            Err(e) => skipped.push(e),
        }
    }
    match skipped.first() {
        Some(e) => err(format!("no compiled backend can start: {e}")),
        None => err("no backend compiled in; build with --features flex"),
    }
}

/// `--model` of a pre-training run: a preset name or a JSON [`MaeConfig`] file.
pub fn mae_model(name: &str) -> Result<MaeConfig> {
    match json_file(name) {
        Some(path) => {
            let text = read_config(&path, name)?;
            serde_json::from_str(&text)
                .map_err(|e| CliError(format!("--model {name}: not a model config: {e}")))
        }
        None => MaeConfig::preset(name).map_err(|e| CliError(format!("--model: {e}"))),
    }
}

/// `--model` of a classifier: a ViT preset name or a JSON [`VitConfig`] file.
pub fn vit_model(name: &str) -> Result<VitConfig> {
    match json_file(name) {
        Some(path) => {
            let text = read_config(&path, name)?;
            serde_json::from_str(&text)
                .map_err(|e| CliError(format!("--model {name}: not a ViT config: {e}")))
        }
        None => VitConfig::preset(name).map_err(|e| CliError(format!("--model: {e}"))),
    }
}

/// Largest model config file read (configs are a few hundred bytes).
const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// A `--model` JSON file: a regular file (not a FIFO or device) of at most
/// [`MAX_CONFIG_BYTES`], as UTF-8.
fn read_config(path: &Path, name: &str) -> Result<String> {
    use std::io::Read;
    let mut text = String::new();
    let read = supmae_model::checkpoint::open_regular(path)
        .and_then(|f| f.take(MAX_CONFIG_BYTES + 1).read_to_string(&mut text));
    match read {
        Err(e) => err(format!("--model {name}: {e}")),
        Ok(n) if n as u64 > MAX_CONFIG_BYTES => err(format!(
            "--model {name}: over {MAX_CONFIG_BYTES} bytes, not a model config"
        )),
        Ok(_) => Ok(text),
    }
}

fn json_file(name: &str) -> Option<PathBuf> {
    let path = Path::new(name);
    (path.extension().is_some_and(|e| e == "json") || path.is_file()).then(|| path.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_driver(kind: BackendKind) -> Result<(), BackendError> {
        match kind {
            BackendKind::Cuda => Err(BackendError::Unavailable {
                kind,
                reason: "libcuda.so was not found".into(),
            }),
            _ => Ok(()),
        }
    }

    #[test]
    fn a_backend_that_cannot_start_falls_back_to_the_next_with_a_note() {
        let order = [BackendKind::Cuda, BackendKind::Flex];
        let (kind, skipped) = choose(None, &order, no_driver).unwrap();
        assert_eq!(kind, BackendKind::Flex);
        assert_eq!(skipped.len(), 1);
        assert!(
            skipped[0].to_string().contains("libcuda.so"),
            "{}",
            skipped[0]
        );
        // Asked for by name, it is an error instead.
        let e = choose(Some(BackendKind::Cuda), &order, no_driver).unwrap_err();
        assert!(e.0.contains("cannot start"), "{e}");
        // Nothing starts: one error naming why.
        let e = choose(None, &[BackendKind::Cuda], no_driver).unwrap_err();
        assert!(e.0.contains("no compiled backend can start"), "{e}");
    }
}
