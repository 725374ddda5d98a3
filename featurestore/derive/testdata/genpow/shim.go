// shim.go completes Go's src/math/pow.go, exp.go and log.go, copied into
// package main by gen.sh: their assembly is off, and the functions they use
// besides these are math's, which are exact.

package main

import "math"

const (
	haveArchExp  = false
	haveArchExp2 = false
	haveArchLog  = false
	haveArchPow  = false
	Sqrt2        = math.Sqrt2
)

func archExp(float64) float64          { panic("no assembly") }
func archExp2(float64) float64         { panic("no assembly") }
func archLog(float64) float64          { panic("no assembly") }
func archPow(float64, float64) float64 { panic("no assembly") }

func Abs(x float64) float64               { return math.Abs(x) }
func Frexp(f float64) (float64, int)      { return math.Frexp(f) }
func Inf(sign int) float64                { return math.Inf(sign) }
func IsInf(f float64, sign int) bool      { return math.IsInf(f, sign) }
func IsNaN(f float64) bool                { return math.IsNaN(f) }
func Ldexp(frac float64, exp int) float64 { return math.Ldexp(frac, exp) }
func Modf(f float64) (float64, float64)   { return math.Modf(f) }
func NaN() float64                        { return math.NaN() }
func Signbit(x float64) bool              { return math.Signbit(x) }
func Sqrt(x float64) float64              { return math.Sqrt(x) }
