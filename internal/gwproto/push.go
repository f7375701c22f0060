package gwproto

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
)

// AppendPush appends a PUSH frame {"kind":kind,"scene":scene,"data":data}
// to dst without re-encoding data (empty data is {}). The gateway sends
// every push in this form, fields in this order, which DecodePush reads
// without a JSON decoder.
func AppendPush(dst []byte, kind, scene string, data []byte) []byte {
	if len(data) == 0 {
		data = []byte("{}")
	}
	start := len(dst)
	var zero [HeaderLen]byte
	dst = append(dst, zero[:]...)
	dst = append(dst, `{"kind":`...)
	dst = appendJSONString(dst, kind)
	dst = append(dst, `,"scene":`...)
	dst = appendJSONString(dst, scene)
	dst = append(dst, `,"data":`...)
	dst = append(dst, data...)
	dst = append(dst, '}')
	// The header, now that the body's length is known.
	h := dst[start : start+HeaderLen]
	binary.BigEndian.PutUint32(h[0:4], uint32(len(dst)-start-4))
	h[4] = byte(TypePush)
	binary.BigEndian.PutUint16(h[5:7], uint16(CodeOK))
	binary.BigEndian.PutUint64(h[7:15], 0)
	return dst
}

// PushLen is the size of the frame AppendPush makes (exact when kind and
// scene need no escaping): the capacity to give its buffer.
func PushLen(kind, scene string, dataLen int) int {
	return HeaderLen + len(`{"kind":"","scene":"","data":}`) + len(kind) + len(scene) + max(dataLen, len("{}"))
}

// appendJSONString appends s as a JSON string: as is when it needs no
// escaping (ids, kinds), else as encoding/json writes it.
func appendJSONString(dst []byte, s string) []byte {
	if plainString(s) {
		dst = append(dst, '"')
		dst = append(dst, s...)
		return append(dst, '"')
	}
	b, _ := json.Marshal(s) // a string always encodes
	return append(dst, b...)
}

// plainString: no byte of s needs escaping in a JSON string (nor is one
// that encoding/json would escape: <, >, &, non-ASCII).
func plainString(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c >= 0x80 || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			return false
		}
	}
	return true
}

// DecodePush decodes a PUSH body. The form the gateway writes (see
// AppendPush) is read by slicing; anything else goes through the JSON
// decoder. Data aliases body in both cases; it is the server's bytes,
// decoded (and so checked) by whoever reads that kind of push.
func DecodePush(body []byte) (Push, error) {
	if p, ok := slicePush(body); ok {
		return p, nil
	}
	var p Push
	if err := DecodeBody(Frame{Type: TypePush, Body: body}, &p); err != nil {
		return Push{}, err
	}
	return p, nil
}

var (
	pushKind  = []byte(`{"kind":"`)
	pushScene = []byte(`","scene":"`)
	pushData  = []byte(`","data":`)
)

// slicePush reads {"kind":"K","scene":"S","data":D} with K and S free of
// escapes and D starting with { or [ (every push's data is an object or
// an array).
func slicePush(b []byte) (Push, bool) {
	if !bytes.HasPrefix(b, pushKind) {
		return Push{}, false
	}
	b = b[len(pushKind):]
	i := bytes.IndexByte(b, '"')
	if i < 0 || bytes.IndexByte(b[:i], '\\') >= 0 || !bytes.HasPrefix(b[i:], pushScene) {
		return Push{}, false
	}
	kind := string(b[:i])
	b = b[i+len(pushScene):]
	i = bytes.IndexByte(b, '"')
	if i < 0 || bytes.IndexByte(b[:i], '\\') >= 0 || !bytes.HasPrefix(b[i:], pushData) {
		return Push{}, false
	}
	scene := string(b[:i])
	b = b[i+len(pushData):]
	if len(b) < 3 || b[len(b)-1] != '}' || (b[0] != '{' && b[0] != '[') {
		return Push{}, false
	}
	data := b[: len(b)-1 : len(b)-1]
	if last := data[len(data)-1]; (b[0] == '{' && last != '}') || (b[0] == '[' && last != ']') {
		return Push{}, false
	}
	return Push{Kind: kind, Scene: scene, Data: json.RawMessage(data)}, true
}
