//! Parameter paths. Every model's module tree mirrors diffusers' state-dict layout, so a
//! parameter's dotted path (`down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.weight`)
//! *is* its diffusers key. Adapters rely on this to find the layers they modify.

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::Tensor;

/// Collects `(path, shape)` of every float parameter.
#[derive(Default)]
struct PathCollector {
    stack: Vec<String>,
    out: Vec<(String, Vec<usize>)>,
}

impl ModuleVisitor for PathCollector {
    fn enter_module(&mut self, name: &str, _container: &str) {
        self.stack.push(name.to_owned());
    }
    fn exit_module(&mut self, _name: &str, _container: &str) {
        self.stack.pop();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        self.out
            .push((self.stack.join("."), param.shape().dims::<D>().to_vec()));
    }
}

/// Every float parameter of `module` as `(dotted path, shape)`, in module order.
pub fn param_paths<M: Module>(module: &M) -> Vec<(String, Vec<usize>)> {
    let mut c = PathCollector::default();
    module.visit(&mut c);
    c.out
}

/// Replaces the float parameters whose path `select` accepts: `f(path, current)` gets the
/// current value flattened to 1-D and returns the new one (same number of elements).
pub fn map_params<M: Module>(
    module: M,
    select: &dyn Fn(&str) -> bool,
    f: &mut dyn FnMut(&str, Tensor<1>) -> Tensor<1>,
) -> M {
    struct Mapper<'a> {
        stack: Vec<String>,
        select: &'a dyn Fn(&str) -> bool,
        f: &'a mut dyn FnMut(&str, Tensor<1>) -> Tensor<1>,
    }
    impl ModuleMapper for Mapper<'_> {
        fn enter_module(&mut self, name: &str, _container: &str) {
            self.stack.push(name.to_owned());
        }
        fn exit_module(&mut self, _name: &str, _container: &str) {
            self.stack.pop();
        }
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            let path = self.stack.join(".");
            if !(self.select)(&path) {
                return param;
            }
            let dims: [usize; D] = param.shape().dims();
            let numel: usize = dims.iter().product();
            let f = &mut self.f;
            param.map(|t| f(&path, t.reshape([numel])).reshape(dims))
        }
    }
    let mut mapper = Mapper {
        stack: Vec::new(),
        select,
        f,
    };
    module.map(&mut mapper)
}

/// One float parameter: its dotted path, shape, flattened value, and whether it is a
/// `Linear` weight (kept `[in, out]` by Burn, `[out, in]` in PyTorch files).
#[derive(Debug, Clone)]
pub struct NamedParam {
    /// Dotted path (the diffusers key).
    pub path: String,
    /// Shape as Burn holds it.
    pub shape: Vec<usize>,
    /// The value, flattened (row-major in `shape`).
    pub value: Tensor<1>,
    /// Whether this is the `weight` of a [`crate::models::layers::Linear`].
    pub linear_weight: bool,
}

/// Every float parameter of `module`, in module order, with its value.
pub fn named_params<M: Module>(module: &M) -> Vec<NamedParam> {
    #[derive(Default)]
    struct Collector {
        stack: Vec<(String, String)>,
        out: Vec<NamedParam>,
    }
    impl ModuleVisitor for Collector {
        fn enter_module(&mut self, name: &str, container: &str) {
            self.stack.push((name.to_owned(), container.to_owned()));
        }
        fn exit_module(&mut self, _name: &str, _container: &str) {
            self.stack.pop();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let path: Vec<&str> = self.stack.iter().map(|(n, _)| n.as_str()).collect();
            // Burn names the struct that holds a field as the field's container.
            let owner = self.stack.last().map(|(_, c)| c.as_str());
            let value = param.val();
            let shape = value.dims().to_vec();
            let numel: usize = shape.iter().product();
            self.out.push(NamedParam {
                linear_weight: D == 2
                    && path.last() == Some(&"weight")
                    && owner == Some("Struct:Linear"),
                path: path.join("."),
                shape,
                value: value.reshape([numel]),
            });
        }
    }
    let mut c = Collector::default();
    module.visit(&mut c);
    c.out
}
