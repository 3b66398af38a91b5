package faultnet

import (
	"bufio"
	"bytes"
	"fmt"
)

// A Dialer starts every labelled connection with a preamble naming its
// endpoint, so the remote Listener can apply rules to its own writes:
//
//	magic (6 bytes) | len(node) | node | len(region) | region
//
// The magic's first byte, 0xFA, starts no protocol that shares the port
// (HTTP/1, HTTP/2's "PRI", TLS's 0x16, small mux header bytes), and a
// connection that does not start with the whole magic passes through with
// its bytes intact.
var magic = []byte{0xFA, 'f', 'n', 'e', 't', 1}

const maxNameLen = 255

func appendPreamble(b []byte, e Endpoint) ([]byte, error) {
	if len(e.Node) > maxNameLen || len(e.Region) > maxNameLen {
		return nil, fmt.Errorf("faultnet: endpoint %s: names are limited to %d bytes", e, maxNameLen)
	}
	b = append(b, magic...)
	b = append(b, byte(len(e.Node)))
	b = append(b, e.Node...)
	b = append(b, byte(len(e.Region)))
	return append(b, e.Region...), nil
}

// readPreamble consumes a preamble from br if one is there. found is false
// (and nothing is consumed) when the stream starts with anything else.
func readPreamble(br *bufio.Reader) (e Endpoint, found bool, err error) {
	// Peek byte by byte so a peer that sent one non-magic byte and waits
	// for an answer is not kept waiting for more.
	for i := range magic {
		b, err := br.Peek(i + 1)
		if err != nil {
			return Endpoint{}, false, err
		}
		if b[i] != magic[i] {
			return Endpoint{}, false, nil
		}
	}
	n := len(magic)
	node, n, err := peekName(br, n)
	if err != nil {
		return Endpoint{}, false, err
	}
	region, n, err := peekName(br, n)
	if err != nil {
		return Endpoint{}, false, err
	}
	if _, err := br.Discard(n); err != nil {
		return Endpoint{}, false, err
	}
	return Endpoint{Node: string(node), Region: string(region)}, true, nil
}

func peekName(br *bufio.Reader, off int) ([]byte, int, error) {
	b, err := br.Peek(off + 1)
	if err != nil {
		return nil, 0, err
	}
	l := int(b[off])
	b, err = br.Peek(off + 1 + l)
	if err != nil {
		return nil, 0, err
	}
	name := bytes.Clone(b[off+1:])
	return name, off + 1 + l, nil
}
