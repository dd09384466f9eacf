//! `ModelSpec`: what the user wrote, in any front-end, with a span on every node.
//!
//! Front-ends (YAML, the `.cnn` DSL, `cnn! { … }`) only parse; they know nothing of layer kinds.
//! [`crate::lower`] turns a `ModelSpec` into the typed [`crate::ir::Model`], reporting unknown
//! layers and attributes; [`crate::check`] then computes shapes.

use crate::span::Span;

/// A string with the span it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Spanned<T> {
    /// The value.
    pub value: T,
    /// Where it was written.
    pub span: Span,
}

impl<T> Spanned<T> {
    /// Pairs a value with its span.
    pub fn new(value: T, span: Span) -> Self {
        Spanned { value, span }
    }
}

/// A whole model as written.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelSpec {
    /// `SeedCnn`.
    pub name: Spanned<String>,
    /// Model-level arguments (`input = [1, 28, 28]`); `input` is required by lowering.
    pub args: Vec<Arg>,
    /// Declared output shape (`-> [10]`), checked when present.
    pub output: Option<Value>,
    /// Top-level items in order.
    pub items: Vec<Item>,
    /// The model header.
    pub span: Span,
}

/// A layer or a named block of layers.
#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    /// `block conv1 { … }` / `- block: conv1`.
    Block(BlockSpec),
    /// `conv2d(…)` / `- conv2d: {…}`.
    Layer(LayerSpec),
}

/// A named group of layers, like `nn.Sequential`; children are numbered 0, 1, 2 …
#[derive(Debug, Clone, PartialEq)]
pub struct BlockSpec {
    /// The block's name, the first part of its parameters' `state_dict` keys.
    pub name: Spanned<String>,
    /// Children in order.
    pub items: Vec<Item>,
    /// The `block` keyword or key.
    pub span: Span,
}

/// One layer as written.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerSpec {
    /// Explicit name (`out: linear(…)`, or YAML `name: out`).
    pub name: Option<Spanned<String>>,
    /// The layer kind as written (`conv2d`).
    pub kind: Spanned<String>,
    /// Arguments, positional and named, in order.
    pub args: Vec<Arg>,
    /// The whole layer.
    pub span: Span,
}

/// One argument: `kernel_size = 5`, or positional `5`.
#[derive(Debug, Clone, PartialEq)]
pub struct Arg {
    /// `None` for a positional argument.
    pub name: Option<Spanned<String>>,
    /// The value.
    pub value: Value,
}

/// A value with its span.
#[derive(Debug, Clone, PartialEq)]
pub struct Value {
    /// What kind of value.
    pub kind: ValueKind,
    /// Where it was written.
    pub span: Span,
}

/// The kinds of values a spec can hold.
#[derive(Debug, Clone, PartialEq)]
pub enum ValueKind {
    /// An integer expression (`64*7*7`).
    Int(Expr),
    /// A decimal number (`1e-5`, `0.5`).
    Float(f64),
    /// `true` / `false`.
    Bool(bool),
    /// A bare word (`same`) or a string (`"same"`).
    Word(String),
    /// `[5, 5]`.
    List(Vec<Value>),
}

impl ValueKind {
    /// How the type is named in "expected …, found …" messages.
    pub fn describe(&self) -> &'static str {
        match self {
            ValueKind::Int(_) => "an integer",
            ValueKind::Float(_) => "a decimal number",
            ValueKind::Bool(_) => "a boolean",
            ValueKind::Word(_) => "a word",
            ValueKind::List(_) => "a list",
        }
    }
}

/// Binary operators of integer expressions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinOp {
    /// `+`
    Add,
    /// `-`
    Sub,
    /// `*`
    Mul,
    /// `/` (must divide exactly)
    Div,
    /// `%`
    Rem,
}

/// An integer expression, evaluated with overflow checks.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// A literal as written (kept as text so overflow in the literal itself is reported).
    Lit(String, Span),
    /// `-e`
    Neg(Box<Expr>, Span),
    /// `a op b op c …`: operators of one precedence level, applied left to right. Kept flat
    /// so that a long sum (`1+1+…+1`) is a list, not a deep tree: nothing recurses over it.
    Chain(Box<Expr>, Vec<(BinOp, Expr)>, Span),
}

/// Why an expression could not be evaluated.
#[derive(Debug, Clone, PartialEq)]
pub enum EvalError {
    /// A literal or intermediate result does not fit in 64 bits.
    Overflow(Span),
    /// Division or remainder by zero.
    DivByZero(Span),
    /// `a / b` with a remainder.
    Inexact {
        /// The division.
        span: Span,
        /// The dividend.
        lhs: i64,
        /// The divisor.
        rhs: i64,
    },
}

impl Expr {
    /// The whole expression's span.
    pub fn span(&self) -> Span {
        match self {
            Expr::Lit(_, s) | Expr::Neg(_, s) | Expr::Chain(_, _, s) => *s,
        }
    }

    /// Evaluates with checked 64-bit arithmetic.
    pub fn eval(&self) -> Result<i64, EvalError> {
        match self {
            Expr::Lit(text, span) => {
                let digits: String = text.chars().filter(|c| *c != '_').collect();
                digits
                    .parse::<i64>()
                    .map_err(|_| EvalError::Overflow(*span))
            }
            Expr::Neg(e, span) => e.eval()?.checked_neg().ok_or(EvalError::Overflow(*span)),
            Expr::Chain(first, rest, _) => {
                let mut acc = first.eval()?;
                for (op, rhs) in rest {
                    // The span of `a op b op c` up to this operand, as a left-nested tree has.
                    acc = apply(*op, acc, rhs.eval()?, first.span().to(rhs.span()))?;
                }
                Ok(acc)
            }
        }
    }

    /// `Some([a, b, c])` when the expression is a product of literals (`32*7*7`), for the
    /// "declared 32×7×7 = 1568" label.
    pub fn product_factors(&self) -> Option<Vec<String>> {
        match self {
            Expr::Lit(t, _) => Some(vec![t.clone()]),
            Expr::Chain(first, rest, _) if rest.iter().all(|(op, _)| *op == BinOp::Mul) => {
                let mut f = first.product_factors()?;
                for (_, e) in rest {
                    f.extend(e.product_factors()?);
                }
                Some(f)
            }
            _ => None,
        }
    }
}

/// `x op y` with checked arithmetic; `span` is reported on failure.
fn apply(op: BinOp, x: i64, y: i64, span: Span) -> Result<i64, EvalError> {
    let r = match op {
        BinOp::Add => x.checked_add(y),
        BinOp::Sub => x.checked_sub(y),
        BinOp::Mul => x.checked_mul(y),
        BinOp::Div | BinOp::Rem if y == 0 => return Err(EvalError::DivByZero(span)),
        // `wrapping_rem` is exact for every `y != 0` (`i64::MIN % -1` is 0, not a panic).
        BinOp::Div if x.wrapping_rem(y) != 0 => {
            return Err(EvalError::Inexact {
                span,
                lhs: x,
                rhs: y,
            });
        }
        BinOp::Div => x.checked_div(y),
        BinOp::Rem => Some(x.wrapping_rem(y)),
    };
    r.ok_or(EvalError::Overflow(span))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::span::SourceId;

    fn sp() -> Span {
        Span::new(SourceId(0), 0, 0)
    }
    fn lit(s: &str) -> Box<Expr> {
        Box::new(Expr::Lit(s.into(), sp()))
    }

    fn bin(op: BinOp, a: Box<Expr>, b: Expr) -> Expr {
        Expr::Chain(a, vec![(op, b)], sp())
    }

    #[test]
    fn eval_checks_overflow_and_exactness() {
        let e = bin(BinOp::Mul, lit("64"), bin(BinOp::Mul, lit("7"), *lit("7")));
        assert_eq!(e.eval(), Ok(3136));
        assert_eq!(
            e.product_factors(),
            Some(vec!["64".into(), "7".into(), "7".into()])
        );
        let big = bin(BinOp::Mul, lit("4294967296"), *lit("4294967296"));
        assert!(matches!(big.eval(), Err(EvalError::Overflow(_))));
        assert!(matches!(
            Expr::Lit("99999999999999999999".into(), sp()).eval(),
            Err(EvalError::Overflow(_))
        ));
        let inexact = bin(BinOp::Div, lit("28"), *lit("3"));
        assert!(matches!(
            inexact.eval(),
            Err(EvalError::Inexact {
                lhs: 28,
                rhs: 3,
                ..
            })
        ));
        let zero = bin(BinOp::Div, lit("28"), *lit("0"));
        assert!(matches!(zero.eval(), Err(EvalError::DivByZero(_))));
        let min = Expr::Neg(lit("9223372036854775808"), sp());
        assert!(min.eval().is_err());
    }

    #[test]
    fn min_divided_by_minus_one_is_an_error_not_a_panic() {
        let min = Expr::Chain(
            Box::new(Expr::Neg(lit("9223372036854775807"), sp())),
            vec![(BinOp::Sub, Expr::Lit("1".into(), sp()))],
            sp(),
        );
        assert_eq!(min.eval(), Ok(i64::MIN));
        let by = |op| {
            Expr::Chain(
                Box::new(min.clone()),
                vec![(op, Expr::Neg(lit("1"), sp()))],
                sp(),
            )
        };
        assert!(matches!(by(BinOp::Div).eval(), Err(EvalError::Overflow(_))));
        assert_eq!(by(BinOp::Rem).eval(), Ok(0));
    }

    #[test]
    fn long_chains_evaluate_without_recursion() {
        let rest = vec![(BinOp::Add, Expr::Lit("1".into(), sp())); 200_000];
        let e = Expr::Chain(lit("784"), rest, sp());
        // On a small stack: neither evaluation nor the drop may recurse per term.
        let r = std::thread::Builder::new()
            .stack_size(64 << 10)
            .spawn(move || e.eval())
            .expect("thread")
            .join()
            .expect("no stack overflow");
        assert_eq!(r, Ok(200_784));
    }
}
