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
        self.out.push((self.stack.join("."), param.shape().dims::<D>().to_vec()));
    }
}

/// Every float parameter of `module` as `(dotted path, shape)`, in module order.
pub fn param_paths<M: Module>(module: &M) -> Vec<(String, Vec<usize>)> {
    let mut c = PathCollector::default();
    module.visit(&mut c);
    c.out
}

/// Replaces float parameters by path: `f(path, tensor)` returns the new value, or None to
/// keep the parameter as it is. Shapes must not change.
pub fn map_params<M: Module>(module: M, f: &mut dyn FnMut(&str, &[usize]) -> Option<Tensor<1>>) -> M {
    struct Mapper<'a> {
        stack: Vec<String>,
        f: &'a mut dyn FnMut(&str, &[usize]) -> Option<Tensor<1>>,
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
            let dims: [usize; D] = param.shape().dims();
            match (self.f)(&path, &dims) {
                Some(flat) => param.map(|_| flat.reshape(dims)),
                None => param,
            }
        }
    }
    let mut mapper = Mapper { stack: Vec::new(), f };
    module.map(&mut mapper)
}
