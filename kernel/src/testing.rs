//! In-kernel checks: a test image lists cases, the kernel runs each one and
//! prints a line per case and a final `N passed, M failed` line, which the
//! host-side harness asserts on.

use alloc::string::String;

use crate::arch::power::ExitCode;

/// One in-kernel check.
pub struct Test {
    /// Printed in the `test NAME ... ok` line.
    pub name: &'static str,
    /// The check: `Err(why)` fails it.
    pub run: fn() -> Result<(), String>,
}

/// Runs `tests` in order; the VM's exit says whether all passed.
pub fn run_tests(suite: &str, tests: &[Test]) -> ExitCode {
    crate::println!("running {} in-kernel tests ({suite})", tests.len());
    let mut failed = 0;
    for test in tests {
        match (test.run)() {
            Ok(()) => crate::println!("test {} ... ok", test.name),
            Err(why) => {
                failed += 1;
                crate::println!("test {} ... FAILED: {why}", test.name);
            }
        }
    }
    crate::println!("{suite}: {} passed, {failed} failed", tests.len() - failed);
    if failed == 0 {
        ExitCode::Success
    } else {
        ExitCode::Failure
    }
}

/// Fails the current in-kernel test with a message unless `cond` holds.
#[doc(hidden)]
#[macro_export]
macro_rules! __bravo_check {
    ($cond:expr) => {
        if !$cond {
            return Err($crate::internals::format!("check failed: {}", stringify!($cond)));
        }
    };
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err($crate::internals::format!($($msg)+));
        }
    };
}

/// Fails the current in-kernel test unless both sides are equal.
#[doc(hidden)]
#[macro_export]
macro_rules! __bravo_check_eq {
    ($left:expr, $right:expr) => {{
        let (left, right) = (&$left, &$right);
        if left != right {
            return Err($crate::internals::format!(
                "{} == {} failed: {:?} != {:?}",
                stringify!($left),
                stringify!($right),
                left,
                right
            ));
        }
    }};
}
