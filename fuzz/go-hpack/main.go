// go-hpack decodes client header blocks the way containerd does, for the
// differential HPACK check (fuzz/hpack_diff.rs): containerd's CRI server is
// grpc-go, which reads frames with golang.org/x/net/http2's Framer and an
// hpack.Decoder of 4096 bytes, and frames of at most 16384 bytes.
//
// Protocol, on stdin and stdout, one exchange per connection:
//
//	request  := u32be length, then ops
//	op       := 'S' u32be size            the largest table size containerd allows
//	          | 'B' u32be count fragment*  one header block, in frames of these fragments
//	fragment := u32be length, bytes
//	response := u32be length, then one result per block, up to and including
//	            the first that ends the connection or that the second
//	            decoder (below) refuses
//	result   := verdict:u8 detail:string raw:u8 (fields | error:string)
//	verdict  := 0 accepted, with the :path grpc-go routes by as detail
//	          | 4 accepted, without a :path
//	          | 1 accepted, but past the header list limit (grpc-go resets the stream)
//	          | 2 stream error (containerd resets the stream; the context stays)
//	          | 3 connection error (containerd ends the connection)
//	raw      := 0, u32be count, (name:string value:string sensitive:u8)*
//	          | 1, error:string
//	string   := u32be length, bytes
//
// The verdict comes from the Framer, as containerd reads the block. The
// field list comes from a second decoder fed the same fragments that
// always emits: the Framer stops emitting after a field it refuses, and
// the proxy must agree on every field, not only the ones grpc-go keeps.
//
// With -seeds DIR it instead writes fuzz inputs (fuzz/hpack_diff.rs's
// format) of request header blocks as grpc-go's client encodes them.
package main

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

const (
	// grpc-go: http2InitHeaderTableSize, http2MaxFrameLen, and its server's
	// default MaxHeaderListSize (also the Framer's own default).
	tableSize         = 4096
	maxFrame          = 16384
	maxHeaderListSize = 16 << 20
)

func main() {
	seeds := flag.String("seeds", "", "write grpc-go seed inputs into this directory and exit")
	flag.Parse()
	if *seeds != "" {
		if err := writeSeeds(*seeds); err != nil {
			fmt.Fprintln(os.Stderr, "go-hpack:", err)
			os.Exit(1)
		}
		return
	}
	if err := serve(bufio.NewReader(os.Stdin), bufio.NewWriter(os.Stdout)); err != nil {
		fmt.Fprintln(os.Stderr, "go-hpack:", err)
		os.Exit(1)
	}
}

func serve(in *bufio.Reader, out *bufio.Writer) error {
	for {
		var n uint32
		if err := binary.Read(in, binary.BigEndian, &n); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		req := make([]byte, n)
		if _, err := io.ReadFull(in, req); err != nil {
			return err
		}
		resp, err := connection(req)
		if err != nil {
			return err
		}
		if err := binary.Write(out, binary.BigEndian, uint32(len(resp))); err != nil {
			return err
		}
		if _, err := out.Write(resp); err != nil {
			return err
		}
		if err := out.Flush(); err != nil {
			return err
		}
	}
}

// reader takes the request apart; a malformed request is the harness's
// bug, reported as an error that ends the helper.
type reader struct {
	b   []byte
	err error
}

func (r *reader) u32() uint32 {
	if len(r.b) < 4 {
		r.err = errors.New("truncated request")
		r.b = nil
		return 0
	}
	v := binary.BigEndian.Uint32(r.b)
	r.b = r.b[4:]
	return v
}

func (r *reader) bytes(n uint32) []byte {
	if uint32(len(r.b)) < n {
		r.err = errors.New("truncated request")
		r.b = nil
		return nil
	}
	v := r.b[:n]
	r.b = r.b[n:]
	return v
}

func putString(out *bytes.Buffer, s string) {
	var n [4]byte
	binary.BigEndian.PutUint32(n[:], uint32(len(s)))
	out.Write(n[:])
	out.WriteString(s)
}

// frame appends one HTTP/2 frame.
func frame(out *bytes.Buffer, kind http2.FrameType, flags http2.Flags, stream uint32, payload []byte) {
	n := len(payload)
	out.Write([]byte{byte(n >> 16), byte(n >> 8), byte(n), byte(kind), byte(flags)})
	var id [4]byte
	binary.BigEndian.PutUint32(id[:], stream)
	out.Write(id[:])
	out.Write(payload)
}

// connection decodes the blocks of one request in one fresh connection
// context.
func connection(req []byte) ([]byte, error) {
	var wire bytes.Buffer
	fr := http2.NewFramer(io.Discard, &wire)
	fr.SetMaxReadFrameSize(maxFrame)
	fr.MaxHeaderListSize = maxHeaderListSize
	framed := hpack.NewDecoder(tableSize, nil)
	fr.ReadMetaHeaders = framed

	var fields []hpack.HeaderField
	raw := hpack.NewDecoder(tableSize, func(f hpack.HeaderField) { fields = append(fields, f) })
	raw.SetMaxStringLength(maxHeaderListSize)

	var out bytes.Buffer
	r := &reader{b: req}
	stream := uint32(1)
	for len(r.b) > 0 && r.err == nil {
		switch op := r.b[0]; op {
		case 'S':
			r.b = r.b[1:]
			size := r.u32()
			framed.SetAllowedMaxDynamicTableSize(size)
			raw.SetAllowedMaxDynamicTableSize(size)
		case 'B':
			r.b = r.b[1:]
			count := r.u32()
			var frags [][]byte
			for i := uint32(0); i < count && r.err == nil; i++ {
				f := r.bytes(r.u32())
				// Split where containerd's frame size limit would.
				for len(f) > maxFrame {
					frags = append(frags, f[:maxFrame])
					f = f[maxFrame:]
				}
				frags = append(frags, f)
			}
			if r.err != nil {
				break
			}
			ended := block(&out, &wire, fr, raw, &fields, stream, frags)
			if ended {
				return out.Bytes(), nil
			}
			stream += 2
		default:
			return nil, fmt.Errorf("unknown op %q", op)
		}
	}
	return out.Bytes(), r.err
}

// block decodes one header block both ways and appends its result; true
// when the connection is not to be followed further.
func block(out, wire *bytes.Buffer, fr *http2.Framer, raw *hpack.Decoder,
	fields *[]hpack.HeaderField, stream uint32, frags [][]byte) bool {
	if len(frags) == 0 {
		frags = [][]byte{nil}
	}
	wire.Reset()
	for i, f := range frags {
		var flags http2.Flags
		if i == len(frags)-1 {
			flags = http2.FlagHeadersEndHeaders
		}
		kind := http2.FrameContinuation
		if i == 0 {
			kind = http2.FrameHeaders
		}
		frame(wire, kind, flags, stream, f)
	}
	var verdict byte
	var detail string
	f, err := fr.ReadFrame()
	switch e := err.(type) {
	case nil:
		mh, ok := f.(*http2.MetaHeadersFrame)
		if !ok {
			verdict, detail = 3, fmt.Sprintf("read %T, not the header block", f)
		} else if mh.Truncated {
			verdict = 1
		} else {
			// grpc-go's operateHeaders: the method is the :path field's
			// value (checkPseudos has made sure there is at most one).
			verdict = 4
			for _, hf := range mh.Fields {
				if hf.Name == ":path" {
					verdict, detail = 0, hf.Value
				}
			}
		}
	case http2.StreamError:
		verdict, detail = 2, e.Error()
		if d := fr.ErrorDetail(); d != nil {
			detail += ": " + d.Error()
		}
	default:
		verdict, detail = 3, err.Error()
	}
	out.WriteByte(verdict)
	putString(out, detail)

	*fields = (*fields)[:0]
	var rawErr error
	for _, f := range frags {
		if _, rawErr = raw.Write(f); rawErr != nil {
			break
		}
	}
	if rawErr == nil {
		rawErr = raw.Close()
	}
	if rawErr != nil {
		out.WriteByte(1)
		putString(out, rawErr.Error())
	} else {
		out.WriteByte(0)
		var n [4]byte
		binary.BigEndian.PutUint32(n[:], uint32(len(*fields)))
		out.Write(n[:])
		for _, hf := range *fields {
			putString(out, hf.Name)
			putString(out, hf.Value)
			if hf.Sensitive {
				out.WriteByte(1)
			} else {
				out.WriteByte(0)
			}
		}
	}
	// The second decoder's context is no use once it stopped mid-block:
	// the rest of the connection is not compared.
	return verdict == 3 || rawErr != nil
}

// ---- seeds ----

// seedInput builds a fuzz input (fuzz/hpack_diff.rs): a block record is
// tag (fragment size << 1), u16be length, bytes; a table size record is
// tag 1, u32be size.
type seedInput struct{ bytes.Buffer }

func (s *seedInput) block(b []byte, fragment byte) {
	s.WriteByte(fragment << 1)
	s.Write([]byte{byte(len(b) >> 8), byte(len(b))})
	s.Write(b)
}

func (s *seedInput) tableSize(v uint32) {
	s.WriteByte(1)
	var n [4]byte
	binary.BigEndian.PutUint32(n[:], v)
	s.Write(n[:])
}

// client encodes request heads with one hpack.Encoder, as one grpc-go
// client connection does (createHeaderFields, then WriteField each).
type client struct {
	buf bytes.Buffer
	enc *hpack.Encoder
}

func newClient() *client {
	c := &client{}
	c.enc = hpack.NewEncoder(&c.buf)
	return c
}

func (c *client) head(path, timeout string, extra ...hpack.HeaderField) []byte {
	c.buf.Reset()
	fields := []hpack.HeaderField{
		{Name: ":method", Value: "POST"},
		{Name: ":scheme", Value: "http"},
		{Name: ":path", Value: path},
		// kubelet dials unix:///run/containerd/containerd.sock.
		{Name: ":authority", Value: "/run/containerd/containerd.sock"},
		{Name: "content-type", Value: "application/grpc"},
		{Name: "user-agent", Value: "grpc-go/1.58.3"},
		{Name: "te", Value: "trailers"},
	}
	if timeout != "" {
		fields = append(fields, hpack.HeaderField{Name: "grpc-timeout", Value: timeout})
	}
	fields = append(fields, extra...)
	for _, f := range fields {
		if err := c.enc.WriteField(f); err != nil {
			panic(err)
		}
	}
	return append([]byte(nil), c.buf.Bytes()...)
}

func writeSeeds(dir string) error {
	const (
		version = "/runtime.v1.RuntimeService/Version"
		pull    = "/runtime.v1.ImageService/PullImage"
		create  = "/runtime.v1.RuntimeService/CreateContainer"
		start   = "/runtime.v1.RuntimeService/StartContainer"
		status  = "/runtime.v1.ImageService/ImageStatus"
		list    = "/runtime.v1.RuntimeService/ListPodSandbox"
	)
	seeds := map[string]*seedInput{}

	// kubelet's first calls on a connection, then the same again: the
	// second round is mostly indexed fields.
	s := &seedInput{}
	c := newClient()
	for _, p := range []string{version, status, pull, create, start} {
		s.block(c.head(p, "119999871u"), 0)
	}
	for _, p := range []string{version, status, pull, create, start} {
		s.block(c.head(p, "119999902u"), 0)
	}
	seeds["grpc-go-kubelet-calls"] = s

	// The same calls in small CONTINUATION fragments.
	s = &seedInput{}
	c = newClient()
	for _, p := range []string{pull, create, pull} {
		s.block(c.head(p, "1999934u"), 7)
	}
	seeds["grpc-go-fragments"] = s

	// A fresh trace header on every call pushes old entries out of the
	// table, and a never-indexed credential.
	s = &seedInput{}
	c = newClient()
	for i := 0; i < 7; i++ {
		trace := fmt.Sprintf("00-%032x-%016x-01", i*7919, i*104729)
		s.block(c.head(list, fmt.Sprintf("%du", 1999000+i),
			hpack.HeaderField{Name: "traceparent", Value: trace},
			hpack.HeaderField{Name: "x-padding", Value: string(bytes.Repeat([]byte{'p'}, 300+i*80))},
			hpack.HeaderField{Name: "authorization", Value: "Bearer abc.def", Sensitive: true}), 0)
	}
	seeds["grpc-go-eviction"] = s

	// containerd allows a larger table; the client shrinks to nothing and
	// grows again (two size updates ahead of one block, RFC 7541 §4.2).
	s = &seedInput{}
	c = newClient()
	s.block(c.head(version, ""), 0)
	s.tableSize(8192)
	c.enc.SetMaxDynamicTableSizeLimit(8192)
	c.enc.SetMaxDynamicTableSize(0)
	c.enc.SetMaxDynamicTableSize(8192)
	s.block(c.head(pull, "119999871u"), 0)
	s.block(c.head(create, "119999871u"), 0)
	seeds["grpc-go-table-size"] = s

	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for name, s := range seeds {
		if err := os.WriteFile(filepath.Join(dir, name), s.Bytes(), 0o644); err != nil {
			return err
		}
	}
	return nil
}
