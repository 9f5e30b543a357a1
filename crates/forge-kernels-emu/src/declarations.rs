//! The emulator's `extern` declarations of the kernels, read back as `forge_kernels::signatures`
//! lists: nothing compiles a declaration against the `.cu` definition it names, so each module's
//! tests hold its declarations against the lists the CUDA build holds the PTX against.

use forge_kernels::signatures::{Param, Pointee};

/// A declared parameter type as the kernel parameter it fills.
pub trait DeclaredParam {
    const PARAM: Param;
}

impl<X: Pointee> DeclaredParam for *const X {
    const PARAM: Param = Param::Ptr(X::NAME);
}

impl<X: Pointee> DeclaredParam for *mut X {
    const PARAM: Param = Param::Ptr(X::NAME);
}

impl DeclaredParam for i32 {
    const PARAM: Param = Param::Int;
}

impl DeclaredParam for f32 {
    const PARAM: Param = Param::Float;
}

/// An `unsafe extern "C" fn` type's parameters.
pub trait Declaration {
    fn params() -> Vec<Param>;
}

macro_rules! declarations {
    ($($arg:ident)+) => {
        impl<$($arg: DeclaredParam),+> Declaration for unsafe extern "C" fn($($arg),+) {
            fn params() -> Vec<Param> {
                vec![$($arg::PARAM),+]
            }
        }
    };
}
declarations!(A B);
declarations!(A B C D);
declarations!(A B C D E);
declarations!(A B C D E F);
declarations!(A B C D E F G);
declarations!(A B C D E F G H I);
declarations!(A B C D E F G H I J);
declarations!(A B C D E F G H I J K L);
declarations!(A B C D E F G H I J K L M);
declarations!(A B C D E F G H I J K L M N);
declarations!(A B C D E F G H I J K L M N O);

/// The parameters `kernel` is declared with.
pub fn declared<F: Declaration>(_kernel: &F) -> Vec<Param> {
    F::params()
}

#[cfg(test)]
mod tests {
    use super::*;
    use forge_kernels::signatures::{instantiate, FLASH_FWD_CACHED};
    use half::bf16;

    #[test]
    fn a_declaration_reads_back_as_its_parameters() {
        type Cached = unsafe extern "C" fn(*const bf16, *const *const bf16, *const *const bf16, *const i32, *const i32, *mut bf16, i32, i32, f32);
        assert_eq!(Cached::params(), instantiate(FLASH_FWD_CACHED, "bf16"));
        // a swapped pair is told apart
        type Swapped = unsafe extern "C" fn(*const bf16, *const *const bf16, *const *const bf16, *const i32, *const i32, *mut bf16, i32, f32, i32);
        assert_ne!(Swapped::params(), instantiate(FLASH_FWD_CACHED, "bf16"));
    }
}
