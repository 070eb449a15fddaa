//! A restricted, bounded unpickler for the `data.pkl` that `torch.save` writes.
//!
//! It understands the opcodes that `torch.save` (pickle protocols 2 to 5) emits and the
//! handful of globals a checkpoint needs; every other global is refused by name, so
//! nothing a file says is ever executed. Memory is bounded by construction: every object
//! lives in one flat arena (a memo reference copies an index, never an object, so
//! "billion laughs" pickles stay as small as their bytes), nothing is dropped recursively,
//! and [`Pickle::tensors`] walks the object graph with a depth limit and a visit budget.

use super::tensor_ref::{Dtype, TensorRef};

/// Largest nesting of dicts [`Pickle::tensors`] descends into.
pub const MAX_DEPTH: usize = 64;
/// Most dict entries [`Pickle::tensors`] visits (memo references count every time).
pub const MAX_VISITS: usize = 1 << 20;
/// Most tensors a state dict may hold (ViT-H with optimizer state has a few thousand).
pub const MAX_TENSORS: usize = 1 << 16;
/// Most bytes of tensor names in all.
pub const MAX_KEY_BYTES: usize = 16 << 20;
/// Most objects a pickle may create (each arena slot is 32 bytes).
pub const MAX_OBJECTS: usize = 4 << 20;
/// Largest integer a `LONG1`/`LONG4` opcode may encode, in bytes.
const MAX_LONG_BYTES: usize = 8;

/// A value on the unpickler's stack: a scalar, or an index into the arena.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Value {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Obj(usize),
    Global(Global),
}

/// The globals a checkpoint may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Global {
    OrderedDict,
    RebuildTensor,
    RebuildParameter,
    Storage(Dtype),
    /// Plain data objects that may sit next to the weights (`argparse.Namespace`, numpy
    /// scalars, `_codecs.encode`): built as opaque objects, never used.
    Opaque,
}

fn global(module: &str, name: &str) -> Result<Global, String> {
    let storage = |d| Ok(Global::Storage(d));
    match (module, name) {
        ("collections", "OrderedDict") => Ok(Global::OrderedDict),
        ("torch._utils", "_rebuild_tensor_v2") => Ok(Global::RebuildTensor),
        ("torch._utils", "_rebuild_parameter") => Ok(Global::RebuildParameter),
        ("torch", "FloatStorage") => storage(Dtype::F32),
        ("torch", "DoubleStorage") => storage(Dtype::F64),
        ("torch", "HalfStorage") => storage(Dtype::F16),
        ("torch", "BFloat16Storage") => storage(Dtype::BF16),
        ("torch", "LongStorage") => storage(Dtype::I64),
        ("torch", "IntStorage") => storage(Dtype::I32),
        ("torch", "ShortStorage") => storage(Dtype::I16),
        ("torch", "CharStorage") => storage(Dtype::I8),
        ("torch", "ByteStorage") => storage(Dtype::U8),
        ("torch", "BoolStorage") => storage(Dtype::Bool),
        ("argparse", "Namespace")
        | ("numpy.core.multiarray", "scalar")
        | ("numpy._core.multiarray", "scalar")
        | ("numpy", "dtype")
        | ("_codecs", "encode")
        | ("copyreg", "_reconstructor")
        | ("builtins", "object") => Ok(Global::Opaque),
        _ => Err(format!(
            "the pickle refers to `{module}.{name}`, which a checkpoint never needs; \
             refusing to load it (only tensors, dicts and plain values are allowed)"
        )),
    }
}

/// An object in the arena (32 bytes; strings live in one shared buffer).
#[derive(Debug)]
enum Node {
    /// `texts[at..at + len]`.
    Str {
        at: usize,
        len: usize,
    },
    Bytes,
    List(Vec<Value>),
    Tuple(Vec<Value>),
    Dict(Vec<(Value, Value)>),
    /// A storage named by a persistent id: its record key, dtype and element count.
    Storage(Box<(String, Dtype, u64)>),
    Tensor(Box<TensorRef>),
    Opaque,
}

/// A parsed `data.pkl`.
#[derive(Debug)]
pub struct Pickle {
    arena: Vec<Node>,
    texts: String,
    top: Value,
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.bytes.len());
        let end =
            end.ok_or_else(|| format!("the pickle ends inside an opcode (byte {})", self.pos))?;
        let s = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    fn le<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }
    fn len4(&mut self) -> Result<usize, String> {
        Ok(u32::from_le_bytes(self.le()?) as usize)
    }
    fn len8(&mut self) -> Result<usize, String> {
        usize::try_from(u64::from_le_bytes(self.le()?)).map_err(|_| "length overflows".into())
    }
    fn line(&mut self) -> Result<&'a str, String> {
        let rest = &self.bytes[self.pos..];
        let n = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or("the pickle ends inside a GLOBAL name")?;
        let s = std::str::from_utf8(&rest[..n]).map_err(|_| "a GLOBAL name is not UTF-8")?;
        self.pos += n + 1;
        Ok(s)
    }
}

struct Machine {
    arena: Vec<Node>,
    texts: String,
    stack: Vec<Value>,
    marks: Vec<usize>,
    memo: std::collections::HashMap<u32, Value>,
}

impl Machine {
    fn alloc(&mut self, node: Node) -> Result<Value, String> {
        if self.arena.len() >= MAX_OBJECTS {
            return Err(format!(
                "the pickle creates more than {MAX_OBJECTS} objects"
            ));
        }
        self.arena.push(node);
        Ok(Value::Obj(self.arena.len() - 1))
    }
    fn pop(&mut self) -> Result<Value, String> {
        match self.stack.pop() {
            Some(v) if self.marks.last().is_none_or(|&m| self.stack.len() >= m) => Ok(v),
            _ => Err("stack underflow".into()),
        }
    }
    fn pop_mark(&mut self) -> Result<Vec<Value>, String> {
        let mark = self.marks.pop().ok_or("no MARK on the stack")?;
        if mark > self.stack.len() {
            return Err("stack underflow".into());
        }
        Ok(self.stack.split_off(mark))
    }
    fn top_mut(&mut self) -> Result<&mut Node, String> {
        match self.stack.last() {
            Some(Value::Obj(i)) => Ok(&mut self.arena[*i]),
            _ => Err("expected an object on the stack".into()),
        }
    }
    fn str_of(&self, v: Value) -> Option<&str> {
        match v {
            Value::Obj(i) => match self.arena[i] {
                Node::Str { at, len } => Some(&self.texts[at..at + len]),
                _ => None,
            },
            _ => None,
        }
    }
    fn tuple_of(&self, v: Value) -> Option<&[Value]> {
        match v {
            Value::Obj(i) => match &self.arena[i] {
                Node::Tuple(t) => Some(t),
                _ => None,
            },
            _ => None,
        }
    }
    fn ints(&self, v: Value, what: &str) -> Result<Vec<i64>, String> {
        let t = self
            .tuple_of(v)
            .ok_or_else(|| format!("tensor {what} is not a tuple"))?;
        t.iter()
            .map(|v| match v {
                Value::Int(i) => Ok(*i),
                _ => Err(format!("tensor {what} holds a non-integer")),
            })
            .collect()
    }

    /// `callable(*args)` for the allowlisted callables.
    fn call(&mut self, callable: Value, args: Value) -> Result<Value, String> {
        let Value::Global(g) = callable else {
            return Err("REDUCE on something that is not an allowed global".into());
        };
        let args: Vec<Value> = self
            .tuple_of(args)
            .ok_or("REDUCE arguments are not a tuple")?
            .to_vec();
        match g {
            Global::OrderedDict => self.alloc(Node::Dict(Vec::new())),
            Global::Opaque => self.alloc(Node::Opaque),
            Global::Storage(_) => Err("a storage type called directly".into()),
            Global::RebuildParameter => match args.first() {
                Some(&v @ Value::Obj(i)) if matches!(self.arena[i], Node::Tensor(_)) => Ok(v),
                _ => Err("_rebuild_parameter without a tensor".into()),
            },
            Global::RebuildTensor => {
                let [storage, offset, size, stride, ..] = args[..] else {
                    return Err("_rebuild_tensor_v2 with too few arguments".into());
                };
                let Value::Obj(s) = storage else {
                    return Err("_rebuild_tensor_v2 without a storage".into());
                };
                let Node::Storage(storage) = &self.arena[s] else {
                    return Err("_rebuild_tensor_v2 without a storage".into());
                };
                let (key, dtype, numel) = &**storage;
                let Value::Int(offset) = offset else {
                    return Err("tensor storage offset is not an integer".into());
                };
                let (key, dtype, numel) = (key.clone(), *dtype, *numel);
                let shape = self.ints(size, "shape")?;
                let stride = self.ints(stride, "stride")?;
                let t = TensorRef::new(key, dtype, numel, offset, &shape, &stride)?;
                self.alloc(Node::Tensor(Box::new(t)))
            }
        }
    }

    fn persistent(&mut self, pid: Value) -> Result<Value, String> {
        let t = self.tuple_of(pid).ok_or("a persistent id is not a tuple")?;
        let [tag, ty, key, _location, numel] = t[..] else {
            return Err("a persistent id is not ('storage', type, key, location, numel)".into());
        };
        if self.str_of(tag) != Some("storage") {
            return Err("a persistent id that is not a storage".into());
        }
        let Value::Global(Global::Storage(dtype)) = ty else {
            return Err("a storage of an unknown type".into());
        };
        let key = self
            .str_of(key)
            .ok_or("a storage key is not a string")?
            .to_string();
        let Value::Int(numel) = numel else {
            return Err("a storage size is not an integer".into());
        };
        let numel = u64::try_from(numel).map_err(|_| format!("storage {key} has negative size"))?;
        self.alloc(Node::Storage(Box::new((key, dtype, numel))))
    }
}

impl Pickle {
    /// Runs the restricted unpickler over `bytes`.
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        let mut r = Reader { bytes, pos: 0 };
        let mut m = Machine {
            arena: Vec::new(),
            stack: Vec::new(),
            marks: Vec::new(),
            memo: Default::default(),
            texts: String::new(),
        };
        loop {
            let at = r.pos;
            let op = r.u8()?;
            // The stack, marks and memo hold 16-byte values: bounded like the arena.
            if m.stack.len().max(m.marks.len()).max(m.memo.len()) >= MAX_OBJECTS {
                return Err(format!(
                    "the pickle's stack or memo grows past {MAX_OBJECTS} entries (byte {at})"
                ));
            }
            match op {
                0x80 => {
                    r.u8()?; // PROTO
                }
                0x95 => {
                    r.take(8)?; // FRAME
                }
                b'.' => break,
                b'(' => m.marks.push(m.stack.len()),
                b'0' => {
                    m.pop()?;
                }
                b'1' => {
                    m.pop_mark()?;
                }
                b'2' => {
                    let v = *m.stack.last().ok_or("DUP on an empty stack")?;
                    m.stack.push(v);
                }
                b'N' => m.stack.push(Value::None),
                0x88 => m.stack.push(Value::Bool(true)),
                0x89 => m.stack.push(Value::Bool(false)),
                b'J' => m.stack.push(Value::Int(i32::from_le_bytes(r.le()?).into())),
                b'K' => m.stack.push(Value::Int(r.u8()?.into())),
                b'M' => m.stack.push(Value::Int(u16::from_le_bytes(r.le()?).into())),
                0x8a | 0x8b => {
                    let n = if op == 0x8a {
                        r.u8()? as usize
                    } else {
                        r.len4()?
                    };
                    if n > MAX_LONG_BYTES {
                        return Err(format!("an integer of {n} bytes at byte {at}"));
                    }
                    let b = r.take(n)?;
                    let fill = if b.last().is_some_and(|&x| x & 0x80 != 0) {
                        0xff
                    } else {
                        0
                    };
                    let mut full = [fill; 8];
                    full[..n].copy_from_slice(b);
                    m.stack.push(Value::Int(i64::from_le_bytes(full)));
                }
                b'G' => m.stack.push(Value::Float(f64::from_be_bytes(r.le()?))),
                b'X' | 0x8c | 0x8d => {
                    let n = match op {
                        b'X' => r.len4()?,
                        0x8c => r.u8()? as usize,
                        _ => r.len8()?,
                    };
                    let s = std::str::from_utf8(r.take(n)?)
                        .map_err(|_| format!("a string at byte {at} is not UTF-8"))?;
                    let at = m.texts.len();
                    m.texts.push_str(s);
                    let v = m.alloc(Node::Str { at, len: s.len() })?;
                    m.stack.push(v);
                }
                b'B' | b'C' | 0x8e | b'T' | b'U' => {
                    let n = match op {
                        b'B' | b'T' => r.len4()?,
                        b'C' | b'U' => r.u8()? as usize,
                        _ => r.len8()?,
                    };
                    r.take(n)?;
                    let v = m.alloc(Node::Bytes)?;
                    m.stack.push(v);
                }
                b'}' => {
                    let v = m.alloc(Node::Dict(Vec::new()))?;
                    m.stack.push(v);
                }
                b']' => {
                    let v = m.alloc(Node::List(Vec::new()))?;
                    m.stack.push(v);
                }
                b')' => {
                    let v = m.alloc(Node::Tuple(Vec::new()))?;
                    m.stack.push(v);
                }
                0x8f => {
                    let v = m.alloc(Node::List(Vec::new()))?; // EMPTY_SET
                    m.stack.push(v);
                }
                b't' | b'l' | 0x91 => {
                    let items = m.pop_mark()?;
                    let v = m.alloc(if op == b't' {
                        Node::Tuple(items)
                    } else {
                        Node::List(items)
                    })?;
                    m.stack.push(v);
                }
                0x85..=0x87 => {
                    let n = (op - 0x84) as usize;
                    let mut items = Vec::with_capacity(n);
                    for _ in 0..n {
                        items.push(m.pop()?);
                    }
                    items.reverse();
                    let v = m.alloc(Node::Tuple(items))?;
                    m.stack.push(v);
                }
                b'd' => {
                    let items = m.pop_mark()?;
                    if items.len() % 2 != 0 {
                        return Err(format!("DICT with an odd number of items at byte {at}"));
                    }
                    let pairs = items.chunks(2).map(|p| (p[0], p[1])).collect();
                    let v = m.alloc(Node::Dict(pairs))?;
                    m.stack.push(v);
                }
                b'a' => {
                    let item = m.pop()?;
                    match m.top_mut()? {
                        Node::List(l) => {
                            l.reserve_exact(1);
                            l.push(item);
                        }
                        _ => return Err(format!("APPEND to a non-list at byte {at}")),
                    }
                }
                b'e' | 0x90 => {
                    let items = m.pop_mark()?;
                    match m.top_mut()? {
                        Node::List(l) => {
                            l.reserve_exact(items.len());
                            l.extend(items);
                        }
                        Node::Opaque => {}
                        _ => return Err(format!("APPENDS to a non-list at byte {at}")),
                    }
                }
                b's' | b'u' => {
                    let items = if op == b's' {
                        let v = m.pop()?;
                        let k = m.pop()?;
                        vec![k, v]
                    } else {
                        m.pop_mark()?
                    };
                    if items.len() % 2 != 0 {
                        return Err(format!("SETITEMS with an odd number of items at byte {at}"));
                    }
                    match m.top_mut()? {
                        Node::Dict(d) => {
                            d.reserve_exact(items.len() / 2);
                            d.extend(items.chunks(2).map(|p| (p[0], p[1])));
                        }
                        Node::Opaque => {}
                        _ => return Err(format!("SETITEM on a non-dict at byte {at}")),
                    }
                }
                b'q' | b'r' | 0x94 => {
                    let key = match op {
                        b'q' => r.u8()? as u32,
                        b'r' => u32::from_le_bytes(r.le()?),
                        _ => m.memo.len() as u32,
                    };
                    let v = *m.stack.last().ok_or("PUT on an empty stack")?;
                    m.memo.insert(key, v);
                }
                b'h' | b'j' => {
                    let key = if op == b'h' {
                        r.u8()? as u32
                    } else {
                        u32::from_le_bytes(r.le()?)
                    };
                    let v = *m
                        .memo
                        .get(&key)
                        .ok_or_else(|| format!("GET of unknown memo {key}"))?;
                    m.stack.push(v);
                }
                b'c' => {
                    let module = r.line()?;
                    let name = r.line()?;
                    m.stack.push(Value::Global(global(module, name)?));
                }
                0x93 => {
                    let name = m.pop()?;
                    let module = m.pop()?;
                    let (module, name) = match (m.str_of(module), m.str_of(name)) {
                        (Some(a), Some(b)) => (a, b),
                        _ => return Err("STACK_GLOBAL without strings".into()),
                    };
                    let g = global(module, name)?;
                    m.stack.push(Value::Global(g));
                }
                b'R' | 0x81 => {
                    let args = m.pop()?;
                    let callable = m.pop()?;
                    let v = m.call(callable, args)?;
                    m.stack.push(v);
                }
                0x92 => {
                    m.pop()?; // NEWOBJ_EX kwargs
                    let args = m.pop()?;
                    let callable = m.pop()?;
                    let v = m.call(callable, args)?;
                    m.stack.push(v);
                }
                b'b' => {
                    m.pop()?; // BUILD: object state (OrderedDict metadata, Namespace fields)
                    m.top_mut()?;
                }
                b'Q' => {
                    let pid = m.pop()?;
                    let v = m.persistent(pid)?;
                    m.stack.push(v);
                }
                _ => return Err(format!("unsupported pickle opcode 0x{op:02x} at byte {at}")),
            }
        }
        let top = m.stack.pop().ok_or("the pickle is empty")?;
        Ok(Self {
            arena: m.arena,
            texts: m.texts,
            top,
        })
    }

    /// Every tensor reachable through (nested) dicts from the top object, keyed by the
    /// dotted path (`model.blocks.0.attn.qkv.weight`). Errors on the depth, visit, tensor
    /// and key-length budgets; a path's text is built only for a tensor.
    pub fn tensors(&self) -> Result<Vec<(String, TensorRef)>, String> {
        let mut out = Vec::new();
        let mut key_bytes = 0usize;
        // (parent path, key) per dict entry pushed; the root is `usize::MAX`.
        let mut paths: Vec<(usize, Value)> = Vec::new();
        let mut todo = vec![(self.top, usize::MAX, 0usize)];
        while let Some((value, path, depth)) = todo.pop() {
            let Value::Obj(i) = value else { continue };
            match &self.arena[i] {
                Node::Tensor(t) => {
                    if out.len() >= MAX_TENSORS {
                        return Err(format!("more than {MAX_TENSORS} tensors"));
                    }
                    let key = self.path_text(&paths, path);
                    key_bytes += key.len();
                    if key_bytes > MAX_KEY_BYTES {
                        return Err(format!(
                            "tensor names longer than {MAX_KEY_BYTES} bytes in all"
                        ));
                    }
                    out.push((key, (**t).clone()));
                }
                Node::Dict(items) => {
                    if depth >= MAX_DEPTH {
                        return Err(format!("dicts nested deeper than {MAX_DEPTH} levels"));
                    }
                    for &(k, v) in items.iter().rev() {
                        if !matches!(k, Value::Int(_)) && self.str_of(k).is_none() {
                            continue;
                        }
                        if paths.len() >= MAX_VISITS {
                            return Err(format!(
                                "the pickle's object graph has more than {MAX_VISITS} dict \
                                 entries (memo references re-used over and over?)"
                            ));
                        }
                        paths.push((path, k));
                        todo.push((v, paths.len() - 1, depth + 1));
                    }
                }
                _ => {}
            }
        }
        Ok(out)
    }

    /// The dotted text of path `at` (at most [`MAX_DEPTH`] keys).
    fn path_text(&self, paths: &[(usize, Value)], mut at: usize) -> String {
        let mut names = Vec::new();
        while at != usize::MAX {
            let (parent, key) = paths[at];
            names.push(match key {
                Value::Int(n) => n.to_string(),
                k => self.str_of(k).unwrap_or_default().to_string(),
            });
            at = parent;
        }
        names.reverse();
        names.join(".")
    }

    fn str_of(&self, v: Value) -> Option<&str> {
        match v {
            Value::Obj(i) => match self.arena[i] {
                Node::Str { at, len } => Some(&self.texts[at..at + len]),
                _ => None,
            },
            _ => None,
        }
    }
}
