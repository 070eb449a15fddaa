//! SupMAE in the browser: the wasm side of `examples/web/index.html`.
//!
//! One [`Demo`] holds a pre-trained SupMAE on one of two Burn backends, chosen by the page:
//! WebGPU (`burn::backend::Wgpu` on the browser's `navigator.gpu`) or Flex (Burn's CPU
//! backend, compiled to wasm). It reconstructs masked images, classifies them with the
//! classification branch, and pre-trains from random weights in steps the page asks for, so
//! the page stays responsive between them. Every call returns a `Promise`; the page makes one
//! at a time (a second one while the first runs is refused as busy, never a panic).
//!
//! Build and serve with `scripts/web.sh serve` (docs/web.md).

#![warn(missing_docs)]

mod session;

use std::cell::RefCell;
use std::rc::Rc;

use burn::backend::wgpu::{WgpuDevice, graphics::WebGpu, init_setup_async};
use burn::backend::{Autodiff, Flex, Wgpu};
use burn::tensor::backend::AutodiffBackend;
use js_sys::{Array, Float32Array, Object, Promise, Reflect, Uint8Array};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::future_to_promise;

use session::Session;

/// A session on one of the two backends (boxed: the two differ in size).
enum Any {
    Cpu(Box<Session<Autodiff<Flex>>>),
    Gpu(Box<Session<Autodiff<Wgpu>>>),
}

/// Runs the same code on whichever backend the session has.
macro_rules! on {
    ($any:expr, $s:ident => $body:expr) => {
        match $any {
            Any::Cpu($s) => $body,
            Any::Gpu($s) => $body,
        }
    };
}

/// The page's handle on a model.
#[wasm_bindgen]
pub struct Demo {
    slot: Rc<RefCell<Option<Any>>>,
    backend: String,
}

fn js_error(e: impl std::fmt::Display) -> JsValue {
    JsError::new(&e.to_string()).into()
}

fn set(object: &Object, key: &str, value: impl Into<JsValue>) {
    // Setting a property of a fresh plain object cannot fail.
    let _ = Reflect::set(object, &key.into(), &value.into());
}

/// An RGB picture as RGBA bytes for an `ImageData`.
fn rgba(picture: &supmae::image::RgbImage) -> Uint8Array {
    let bytes: Vec<u8> = picture
        .pixels()
        .flat_map(|p| [p.0[0], p.0[1], p.0[2], 255])
        .collect();
    Uint8Array::from(bytes.as_slice())
}

async fn session<B: AutodiffBackend>(
    device: B::Device,
    files: &[Vec<u8>; 5],
) -> Result<Session<B>, JsValue> {
    Session::<B>::new(
        device,
        &files[0],
        "checkpoint.ckpt",
        [&files[1], &files[2]],
        [&files[3], &files[4]],
    )
    .map_err(js_error)
}

#[wasm_bindgen]
impl Demo {
    /// Starts a session: `backend` is `"webgpu"` or `"cpu"`; `checkpoint` a `supmae
    /// pretrain` `checkpoint.ckpt`; the rest Fashion-MNIST's gzipped idx files (train images,
    /// train labels, t10k images, t10k labels).
    pub async fn create(
        backend: String,
        checkpoint: Vec<u8>,
        train_images: Vec<u8>,
        train_labels: Vec<u8>,
        test_images: Vec<u8>,
        test_labels: Vec<u8>,
    ) -> Result<Demo, JsValue> {
        console_error_panic_hook::set_once();
        let files = [
            checkpoint,
            train_images,
            train_labels,
            test_images,
            test_labels,
        ];
        let (any, name) = match backend.as_str() {
            "webgpu" => {
                let device = WgpuDevice::default();
                let setup = init_setup_async::<WebGpu>(&device, Default::default()).await;
                let info = setup.adapter.get_info();
                // Browsers often keep the adapter's name to themselves.
                let name = if info.name.is_empty() {
                    "WebGPU".to_string()
                } else {
                    format!("WebGPU ({})", info.name)
                };
                (Any::Gpu(Box::new(session(device, &files).await?)), name)
            }
            "cpu" => (
                Any::Cpu(Box::new(session(Default::default(), &files).await?)),
                "Flex (CPU, wasm, one thread)".to_string(),
            ),
            other => return Err(js_error(format!("unknown backend {other:?}"))),
        };
        Ok(Demo {
            slot: Rc::new(RefCell::new(Some(any))),
            backend: name,
        })
    }

    /// The backend in words.
    pub fn backend(&self) -> String {
        self.backend.clone()
    }

    /// What is loaded, or why nothing is (busy).
    pub fn describe(&self) -> String {
        match &*self.slot.borrow() {
            Some(any) => on!(any, s => s.describe().to_string()),
            None => "busy".into(),
        }
    }

    /// Training steps taken since "train" was pressed.
    pub fn steps(&self) -> usize {
        match &*self.slot.borrow() {
            Some(any) => on!(any, s => s.steps()),
            None => 0,
        }
    }

    /// Number of validation images.
    #[wasm_bindgen(js_name = testCount)]
    pub fn test_count(&self) -> usize {
        use supmae_data::ImageSource;
        match &*self.slot.borrow() {
            Some(any) => on!(any, s => s.test_images().len()),
            None => 0,
        }
    }

    /// Validation image `index`: 784 greyscale bytes (empty if out of range).
    #[wasm_bindgen(js_name = testImage)]
    pub fn test_image(&self, index: usize) -> Vec<u8> {
        use supmae_data::ImageSource;
        match &*self.slot.borrow() {
            Some(any) => on!(any, s => {
                let t = s.test_images();
                if index < t.len() { t.pixels(index).to_vec() } else { Vec::new() }
            }),
            None => Vec::new(),
        }
    }

    /// The class name of validation image `index`.
    #[wasm_bindgen(js_name = testLabel)]
    pub fn test_label(&self, index: usize) -> String {
        use supmae_data::ImageSource;
        match &*self.slot.borrow() {
            Some(any) => on!(any, s => {
                let t = s.test_images();
                if index < t.len() { t.classes()[t.label(index)].clone() } else { String::new() }
            }),
            None => String::new(),
        }
    }

    /// Runs `job` on the session, taken out of its slot while it runs.
    fn run<F, Fut>(&self, job: F) -> Promise
    where
        F: FnOnce(Any) -> Fut + 'static,
        Fut: std::future::Future<Output = (Any, Result<JsValue, JsValue>)> + 'static,
    {
        let slot = self.slot.clone();
        future_to_promise(async move {
            let Some(any) = slot.borrow_mut().take() else {
                return Err(js_error("busy: the previous call has not finished"));
            };
            let (any, out) = job(any).await;
            *slot.borrow_mut() = Some(any);
            out
        })
    }

    /// Reconstructs 784 greyscale bytes with `mask_ratio` of the patches removed, masks from
    /// `seed`, and classifies them: `{original, masked, reconstruction, pasted}` (RGBA
    /// bytes), `maskedMse`, `patchMeanMse`, `removed`, `patches`, `top` (`[{label,
    /// probability}]`, 3 of them).
    pub fn reconstruct(&self, pixels: Vec<u8>, mask_ratio: f64, seed: u32) -> Promise {
        self.run(move |any| async move {
            let out = on!(&any, s => reconstruct_and_classify(s, &pixels, mask_ratio, seed).await);
            (any, out.map_err(js_error))
        })
    }

    /// Replaces the model by a `checkpoint.ckpt` a visitor picked; resolves to its
    /// description.
    #[wasm_bindgen(js_name = loadCheckpoint)]
    pub fn load_checkpoint(&self, bytes: Vec<u8>, name: String) -> Promise {
        self.run(move |mut any| async move {
            let out = on!(&mut any, s => s.load_checkpoint(&bytes, &name));
            (any, out.map(JsValue::from).map_err(js_error))
        })
    }

    /// Starts again from random weights drawn from `seed` (the next `train` call trains them).
    #[wasm_bindgen(js_name = resetTraining)]
    pub fn reset_training(&self, seed: u32) -> Promise {
        self.run(move |mut any| async move {
            let out = on!(&mut any, s => s.reset_training(u64::from(seed)));
            (any, out.map(|()| JsValue::UNDEFINED).map_err(js_error))
        })
    }

    /// Goes back to the loaded model.
    #[wasm_bindgen(js_name = stopTraining)]
    pub fn stop_training(&self) -> Promise {
        self.run(move |mut any| async move {
            on!(&mut any, s => s.stop_training());
            (any, Ok(JsValue::UNDEFINED))
        })
    }

    /// Runs `steps` pre-training steps of `batch` images; resolves to their losses
    /// (`Float32Array`).
    pub fn train(&self, steps: usize, batch: usize) -> Promise {
        self.run(move |mut any| async move {
            let out = on!(&mut any, s => s.train(steps, batch).await);
            let out = out
                .map(|losses| Float32Array::from(losses.as_slice()).into())
                .map_err(js_error);
            (any, out)
        })
    }
}

async fn reconstruct_and_classify<B: AutodiffBackend>(
    s: &Session<B>,
    pixels: &[u8],
    mask_ratio: f64,
    seed: u32,
) -> Result<JsValue, String> {
    let r = s.reconstruct(pixels, mask_ratio, u64::from(seed)).await?;
    let top = s.classify(pixels, 3).await?;
    let out = Object::new();
    set(&out, "original", rgba(&r.original));
    set(&out, "masked", rgba(&r.masked));
    set(&out, "reconstruction", rgba(&r.reconstruction));
    set(&out, "pasted", rgba(&r.pasted));
    set(&out, "maskedMse", r.masked_mse);
    set(&out, "patchMeanMse", r.patch_mean_mse);
    set(&out, "removed", r.removed as u32);
    set(&out, "patches", r.patches as u32);
    let guesses = Array::new();
    for g in top {
        let o = Object::new();
        set(&o, "label", g.label);
        set(&o, "probability", g.probability);
        guesses.push(&o);
    }
    set(&out, "top", guesses);
    Ok(out.into())
}
