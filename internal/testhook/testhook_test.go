package testhook

import "testing"

func TestParse(t *testing.T) {
	b, err := Parse(" dedupe,resend ")
	if err != nil || !b.Has(Dedupe) || !b.Has(Resend) || b.Has(Fencing) {
		t.Fatalf("Parse: %v %v", b, err)
	}
	if b, err := Parse(""); err != nil || len(b) != 0 {
		t.Fatalf("empty: %v %v", b, err)
	}
	// A typo must not silently leave every guarantee on.
	if _, err := Parse("dedup"); err == nil {
		t.Fatal("unknown name accepted")
	}
}
