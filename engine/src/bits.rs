//! One-bit flags packed in a byte, with a getter and a setter per flag: per-connection
//! records stay small (an idle connection costs what its records do).

/// `bit_flags! { Name: /// doc \n getter setter = BIT; ... }` defines `Name(u8)`.
macro_rules! bit_flags {
    ($(#[$sdoc:meta])* $name:ident: $($(#[$doc:meta])* $get:ident $set:ident = $bit:expr;)*) => {
        $(#[$sdoc])*
        #[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
        pub(crate) struct $name(u8);

        #[allow(dead_code)]
        impl $name {
            $(
                $(#[$doc])*
                #[inline]
                pub(crate) fn $get(self) -> bool {
                    self.0 & $bit != 0
                }
                #[inline]
                pub(crate) fn $set(&mut self, on: bool) {
                    if on {
                        self.0 |= $bit;
                    } else {
                        self.0 &= !$bit;
                    }
                }
            )*
        }
    };
}

pub(crate) use bit_flags;
