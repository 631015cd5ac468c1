package ctl

import "google.golang.org/protobuf/proto"

func unmarshal(b []byte, m proto.Message) error {
	return proto.UnmarshalOptions{RecursionLimit: 32}.Unmarshal(b, m)
}
