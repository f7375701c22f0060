package game

import (
	"encoding/binary"
	"math"
	"strconv"
	"testing"
)

// TestDecoderVarints: the decoder's one-byte fast path reads what
// binary.Uvarint and binary.Varint read, for every first byte, followed or
// not by more bytes, and longer encodings still go through them.
func TestDecoderVarints(t *testing.T) {
	var inputs [][]byte
	inputs = append(inputs, nil)
	for b := range 256 {
		inputs = append(inputs, []byte{byte(b)}, []byte{byte(b), 0x01}, []byte{byte(b), 0x80})
	}
	for _, v := range []uint64{127, 128, 300, 1 << 32, 1<<64 - 1} {
		inputs = append(inputs, binary.AppendUvarint(nil, v))
	}
	inputs = append(inputs, []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02})
	for _, in := range inputs {
		d := decoder{b: in}
		got := d.uv()
		want, n := binary.Uvarint(in)
		if n <= 0 {
			want = 0
		}
		if got != want || (d.err == nil) != (n > 0) || (n > 0 && len(d.b) != len(in)-n) {
			t.Errorf("uv(%x) = %d, %v, %d left; binary.Uvarint: %d, %d", in, got, d.err, len(d.b), want, n)
		}
		d = decoder{b: in}
		gotv := d.v()
		wantv, n := binary.Varint(in)
		if n <= 0 {
			wantv = 0
		}
		if gotv != wantv || (d.err == nil) != (n > 0) || (n > 0 && len(d.b) != len(in)-n) {
			t.Errorf("v(%x) = %d, %v, %d left; binary.Varint: %d, %d", in, gotv, d.err, len(d.b), wantv, n)
		}
	}
}

// TestDecimalLen: decimalLen is len(strconv.Itoa(v)) (a stored move's cost).
func TestDecimalLen(t *testing.T) {
	vals := []int{0, 1, -1, 9, 10, -10, 99, 100, math.MaxInt32, math.MinInt32, math.MaxInt, math.MinInt, math.MinInt + 1}
	for p := 1; p <= 1e18 && p > 0; p *= 10 {
		vals = append(vals, p-1, p, p+1, -p+1, -p, -p-1)
	}
	for _, v := range vals {
		if got, want := decimalLen(v), len(strconv.Itoa(v)); got != want {
			t.Errorf("decimalLen(%d) = %d, want %d", v, got, want)
		}
	}
}
