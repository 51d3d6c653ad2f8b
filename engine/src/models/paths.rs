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
