//! The emulator's `extern "C"` bindings of every kernel entry point, derived from forge-kernels'
//! kernel table (`forge_kernels::kernel_table!`, the one declaration of each kernel): for each
//! entry point `<kernel>[_<variant>]_<dtype>` a declaration of the symbol build.rs compiled from
//! its `.cu` file, and a call of it with a launch's [`Arg`]s, found by name.

use std::ffi::c_void;

use forge_kernels::backend::Arg;

/// A call of one entry point with its arguments, in the order and kinds of its declaration.
pub(crate) type Call = unsafe fn(&[Arg]);

/// The C type a parameter kind is passed as (every pointer as a device address).
macro_rules! c_type {
    (Int) => { i32 };
    (Float) => { f32 };
    ($pointer:ident) => { *mut c_void };
}

/// The next argument as parameter kind `$kind` (the launch functions of forge_kernels::kernels
/// build each argument list from the same table, so a mismatch is a bug there).
macro_rules! c_arg {
    (Int, $args:ident) => {
        match $args.next() {
            Some(Arg::Int(v)) => *v,
            other => panic!("an int parameter given {other:?}"),
        }
    };
    (Float, $args:ident) => {
        match $args.next() {
            Some(Arg::Float(v)) => *v,
            other => panic!("a float parameter given {other:?}"),
        }
    };
    ($pointer:ident, $args:ident) => {
        match $args.next() {
            Some(Arg::Address(a)) => *a as *mut c_void,
            other => panic!("a pointer parameter given {other:?}"),
        }
    };
}

/// One entry point: its declaration, and its call when it is the one `$wanted` names.
macro_rules! bind_entry {
    ($wanted:ident $name:ident ($($p:ident : $kind:ident),* $(,)?)) => {{
        extern "C" {
            fn $name($($p: c_type!($kind)),*);
        }
        if $wanted == stringify!($name) {
            let call: fn(&[Arg]) = |args| {
                let mut args = args.iter();
                // SAFETY: `Call`'s contract: the arguments are the entry point's C parameters,
                // addresses of live emulator buffers as long as the sizes passed index.
                unsafe { $name($(c_arg!($kind, args)),*) }
            };
            return Some(call as Call);
        }
    }};
}

macro_rules! bind_variant {
    ($wanted:ident $kernel:ident $variant:ident [$($t:ident)+] $params:tt) => {
        paste::paste! { $(bind_entry!($wanted [<$kernel _ $variant _ $t>] $params);)+ }
    };
}

macro_rules! bind_kernel {
    ($wanted:ident $kernel:ident [] [$($t:ident)+] $params:tt) => {
        paste::paste! { $(bind_entry!($wanted [<$kernel _ $t>] $params);)+ }
    };
    ($wanted:ident $kernel:ident [$($variant:ident)+] $dtypes:tt $params:tt) => {
        $(bind_variant!($wanted $kernel $variant $dtypes $params);)+
    };
}

/// The emulator's expansion of the kernel table: [`lookup`].
macro_rules! bind_kernels {
    ($($file:ident $module:ident $name:literal { $($kernel:ident $variants:tt $dtypes:tt $params:tt;)+ })+) => {
        /// The call of the entry point named `wanted` (`rms_norm_fwd_bf16`), if the table declares it.
        ///
        /// Calling it is unsafe: the arguments must be the entry point's C parameters (as the launch
        /// functions of forge_kernels::kernels build them), pointing into live buffers as long as
        /// the sizes passed index.
        pub(crate) fn lookup(wanted: &str) -> Option<Call> {
            $($(bind_kernel!(wanted $kernel $variants $dtypes $params);)+)+
            None
        }
    };
}

forge_kernels::kernel_table!(bind_kernels);

#[cfg(test)]
mod tests {
    use forge_kernels::kernels::DECLARATIONS;

    #[test]
    fn every_declared_entry_point_is_bound() {
        let names: Vec<String> = DECLARATIONS.iter().flat_map(|d| d.entry_names()).collect();
        assert_eq!(names.len(), 70);
        for name in &names {
            assert!(super::lookup(name).is_some(), "{name} has no binding");
        }
        assert!(super::lookup("rms_norm_fwd_f64").is_none());
    }
}
