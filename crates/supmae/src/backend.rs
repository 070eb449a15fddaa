//! Backend selection: the one place where a Cargo feature becomes a concrete Burn backend.
//!
//! Library code is generic over `B: Backend` / `B: AutodiffBackend`. Programs pick a
//! backend at run time with [`BackendKind`] and hand a [`BackendJob`] to [`run_on`], which
//! instantiates the job for the concrete type. Adding a backend means adding a feature, a
//! [`BackendKind`] variant and one arm in [`run_on`]; nothing else changes.

use std::fmt;
use std::str::FromStr;

use burn::tensor::backend::AutodiffBackend;

/// The backends this crate knows about (compiled in or not).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BackendKind {
    /// Pure-Rust CPU backend (feature `flex`, default).
    Flex,
    /// wgpu: Vulkan, Metal, DX12 or WebGPU, whichever the platform offers (feature `wgpu`).
    Wgpu,
    /// wgpu compiled to SPIR-V for Vulkan (feature `vulkan`).
    Vulkan,
    /// NVIDIA CUDA (feature `cuda`).
    Cuda,
}

/// Every kind, in the order `--help` lists them.
pub(crate) const ALL_BACKENDS: [BackendKind; 4] = [
    BackendKind::Flex,
    BackendKind::Wgpu,
    BackendKind::Vulkan,
    BackendKind::Cuda,
];

impl BackendKind {
    /// The name used on the command line and in configs.
    pub fn name(self) -> &'static str {
        match self {
            Self::Flex => "flex",
            Self::Wgpu => "wgpu",
            Self::Vulkan => "vulkan",
            Self::Cuda => "cuda",
        }
    }

    /// Whether this build contains the backend.
    pub fn is_compiled(self) -> bool {
        match self {
            Self::Flex => cfg!(feature = "flex"),
            Self::Wgpu => cfg!(feature = "wgpu"),
            Self::Vulkan => cfg!(feature = "vulkan"),
            Self::Cuda => cfg!(feature = "cuda"),
        }
    }

    /// The backends compiled into this build.
    pub fn compiled() -> Vec<BackendKind> {
        ALL_BACKENDS
            .into_iter()
            .filter(|k| k.is_compiled())
            .collect()
    }

    /// The preferred compiled backend: CUDA, then Vulkan, then wgpu, then the CPU.
    pub fn best_compiled() -> Option<BackendKind> {
        [Self::Cuda, Self::Vulkan, Self::Wgpu, Self::Flex]
            .into_iter()
            .find(|k| k.is_compiled())
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A backend that cannot be used in this build.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackendError {
    /// The name is not a backend at all.
    #[error("unknown backend `{0}`; known backends: flex, wgpu, vulkan, cuda")]
    Unknown(String),
    /// The backend is compiled in but its driver is missing on this machine.
    #[error("backend `{kind}` cannot start: {reason}")]
    Unavailable {
        /// The requested backend.
        kind: BackendKind,
        /// What is missing.
        reason: String,
    },
    /// The backend exists but this binary was built without its feature.
    #[error(
        "backend `{kind}` is not compiled into this build (compiled: {compiled}); \
         rebuild with `--features {kind}`"
    )]
    NotCompiled {
        /// The requested backend.
        kind: BackendKind,
        /// The backends that are available.
        compiled: String,
    },
}

impl FromStr for BackendKind {
    type Err = BackendError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ALL_BACKENDS
            .into_iter()
            .find(|k| k.name().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| BackendError::Unknown(s.to_string()))
    }
}

/// Work to run on whichever backend was chosen at run time.
pub trait BackendJob {
    /// What the job returns.
    type Output;

    /// Runs the job on autodiff backend `B` and its default device.
    fn run<B: AutodiffBackend>(self, device: B::Device) -> Self::Output;
}

/// Runs `job` on the backend `kind`, or says why it cannot.
pub fn run_on<J: BackendJob>(kind: BackendKind, job: J) -> Result<J::Output, BackendError> {
    #[allow(unreachable_patterns)]
    match kind {
        #[cfg(feature = "flex")]
        BackendKind::Flex => {
            Ok(job.run::<burn::backend::Autodiff<burn::backend::Flex>>(Default::default()))
        }
        #[cfg(feature = "wgpu")]
        BackendKind::Wgpu => {
            Ok(job.run::<burn::backend::Autodiff<burn::backend::Wgpu>>(Default::default()))
        }
        #[cfg(feature = "vulkan")]
        BackendKind::Vulkan => {
            Ok(job.run::<burn::backend::Autodiff<burn::backend::Vulkan>>(Default::default()))
        }
        #[cfg(feature = "cuda")]
        BackendKind::Cuda => {
            cuda_driver_present()?;
            Ok(job.run::<burn::backend::Autodiff<burn::backend::Cuda>>(Default::default()))
        }
        _ => {
            drop(job); // used by the compiled backends' arms only
            Err(BackendError::NotCompiled {
                kind,
                compiled: BackendKind::compiled()
                    .iter()
                    .map(|k| k.name())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
        }
    }
}

/// Whether the NVIDIA driver library (`libcuda.so`) can be found, checked before CUDA
/// starts: without it the CUDA runtime panics on a worker thread instead of returning an
/// error. Looks where the dynamic loader looks (`LD_LIBRARY_PATH`, the loader cache, the
/// usual directories); `SUPMAE_SKIP_CUDA_PROBE=1` skips the check.
#[cfg(feature = "cuda")]
fn cuda_driver_present() -> Result<(), BackendError> {
    if std::env::var_os("SUPMAE_SKIP_CUDA_PROBE").is_some() || !cfg!(target_os = "linux") {
        return Ok(());
    }
    let mut dirs: Vec<std::path::PathBuf> = std::env::var_os("LD_LIBRARY_PATH")
        .map(|v| std::env::split_paths(&v).collect())
        .unwrap_or_default();
    for d in [
        "/usr/lib/x86_64-linux-gnu",
        "/usr/lib/aarch64-linux-gnu",
        "/usr/lib64",
        "/usr/lib",
        "/usr/local/cuda/lib64",
        "/usr/local/cuda/compat",
        "/usr/lib/wsl/lib",
    ] {
        dirs.push(d.into());
    }
    let in_dirs = dirs.iter().any(|d| {
        std::fs::read_dir(d).is_ok_and(|entries| {
            entries.flatten().any(|e| {
                let name = e.file_name();
                let name = name.to_string_lossy();
                name.starts_with("libcuda.so") || name.starts_with("libnvcuda.so")
            })
        })
    });
    let in_cache = std::fs::read("/etc/ld.so.cache")
        .is_ok_and(|bytes| bytes.windows(10).any(|w| w == b"libcuda.so"));
    if in_dirs || in_cache {
        Ok(())
    } else {
        Err(BackendError::Unavailable {
            kind: BackendKind::Cuda,
            reason: "the NVIDIA driver library libcuda.so was not found (install the NVIDIA \
                     driver, or add its directory to LD_LIBRARY_PATH)"
                .into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Name;
    impl BackendJob for Name {
        type Output = &'static str;
        fn run<B: AutodiffBackend>(self, _device: B::Device) -> &'static str {
            std::any::type_name::<B>()
        }
    }

    #[test]
    fn names_parse_and_uncompiled_backends_are_errors() {
        assert_eq!("FLEX".parse::<BackendKind>(), Ok(BackendKind::Flex));
        assert!(matches!(
            "tpu".parse::<BackendKind>(),
            Err(BackendError::Unknown(_))
        ));
        for kind in ALL_BACKENDS {
            let result = run_on(kind, Name);
            if let Err(BackendError::Unavailable { .. }) = result {
                continue; // compiled in, but no driver on this machine
            }
            assert_eq!(result.is_ok(), kind.is_compiled(), "{kind}");
            if let Err(err) = result {
                assert!(
                    err.to_string().contains(&format!("--features {kind}")),
                    "{err}"
                );
            }
        }
    }
}
