// Command govectors prints conformance vectors for chains/fabric/proto.py: Fabric messages marshalled by
// fabric-protos-go v0.2.0 (the protos Fabric v2.5.9 is built with) and block header bytes as Fabric's
// protoutil.BlockHeaderBytes computes them (encoding/asn1 of {*big.Int, []byte, []byte}).
//
//	cd tests/unit/fabric/govectors && go run . > ../vectors.json
package main

import (
	"encoding/asn1"
	"encoding/hex"
	"encoding/json"
	"math/big"
	"os"

	"github.com/golang/protobuf/proto"
	protov2 "google.golang.org/protobuf/proto"
	"github.com/golang/protobuf/ptypes/timestamp"
	cb "github.com/hyperledger/fabric-protos-go/common"
	mspb "github.com/hyperledger/fabric-protos-go/msp"
	ob "github.com/hyperledger/fabric-protos-go/orderer"
	"github.com/hyperledger/fabric-protos-go/orderer/etcdraft"
	pb "github.com/hyperledger/fabric-protos-go/peer"
)

// asn1Header is the struct protoutil.BlockHeaderBytes marshals (fabric v2.5.9 protoutil/blockutils.go).
type asn1Header struct {
	Number       *big.Int
	PreviousHash []byte
	DataHash     []byte
}

func h(s string) []byte {
	b, err := hex.DecodeString(s)
	if err != nil {
		panic(err)
	}
	return b
}

func marshal(m proto.Message) string {
	b, err := proto.Marshal(m)
	if err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}

func main() {
	out := map[string]interface{}{}

	type hv struct {
		Number   uint64 `json:"number"`
		Previous string `json:"previous_hash"`
		Data     string `json:"data_hash"`
		Proto    string `json:"proto"`
		ASN1     string `json:"asn1"`
	}
	var headers []hv
	long := make([]byte, 200)
	for i := range long {
		long[i] = byte(i)
	}
	for _, c := range []struct {
		n    uint64
		p, d []byte
	}{
		{0, nil, h("ab")},
		{1, h("00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"), h("ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100")},
		{127, []byte{}, []byte{}},
		{128, h("01"), long},
		{255, long, h("02")},
		{256, h("03"), h("04")},
		{1 << 63, h("05"), h("06")},
		{^uint64(0), h("07"), h("08")},
	} {
		b, err := asn1.Marshal(asn1Header{Number: new(big.Int).SetUint64(c.n), PreviousHash: c.p, DataHash: c.d})
		if err != nil {
			panic(err)
		}
		hdr := &cb.BlockHeader{Number: c.n, PreviousHash: c.p, DataHash: c.d}
		headers = append(headers, hv{c.n, hex.EncodeToString(c.p), hex.EncodeToString(c.d), marshal(hdr), hex.EncodeToString(b)})
	}
	out["block_headers"] = headers

	sigHdr := &cb.SignatureHeader{Creator: marshal2(&mspb.SerializedIdentity{Mspid: "OrdererMSP", IdBytes: []byte("-----BEGIN CERTIFICATE-----\nMII\n-----END CERTIFICATE-----\n")}), Nonce: h("0102")}
	obm := &cb.OrdererBlockMetadata{LastConfig: &cb.LastConfig{Index: 300}, ConsenterMetadata: h("0801")}
	md := &cb.Metadata{Value: marshal2(obm), Signatures: []*cb.MetadataSignature{{SignatureHeader: marshal2(sigHdr), Signature: h("3045")}}}
	block := &cb.Block{
		Header:   &cb.BlockHeader{Number: 7, PreviousHash: h("aa"), DataHash: h("bb")},
		Data:     &cb.BlockData{Data: [][]byte{h("0a00"), h("")}},
		Metadata: &cb.BlockMetadata{Metadata: [][]byte{marshal2(md), {}, {}, {}, {}}},
	}
	out["block"] = marshal(block)
	out["metadata"] = marshal(md)
	out["orderer_block_metadata"] = marshal(obm)
	out["signature_header"] = marshal(sigHdr)
	out["block_no_data"] = marshal(&cb.Block{Header: &cb.BlockHeader{Number: 1}, Metadata: &cb.BlockMetadata{Metadata: [][]byte{{}}}})

	chdr := &cb.ChannelHeader{Type: 1, Version: 0, Timestamp: &timestamp.Timestamp{Seconds: 1790000000, Nanos: 5}, ChannelId: "park", TxId: "tx1", Epoch: 0}
	out["channel_header"] = marshal(chdr)
	out["channel_header_negative"] = marshal(&cb.ChannelHeader{Type: -1, ChannelId: "park", Timestamp: &timestamp.Timestamp{Seconds: -5}})

	nodeOUs := &mspb.FabricNodeOUs{Enable: true,
		ClientOuIdentifier:  &mspb.FabricOUIdentifier{Certificate: []byte("CA"), OrganizationalUnitIdentifier: "client"},
		PeerOuIdentifier:    &mspb.FabricOUIdentifier{OrganizationalUnitIdentifier: "peer"},
		OrdererOuIdentifier: &mspb.FabricOUIdentifier{OrganizationalUnitIdentifier: "orderer"}}
	fmsp := &mspb.FabricMSPConfig{Name: "OperatorMSP", RootCerts: [][]byte{[]byte("root1"), []byte("root2")},
		IntermediateCerts: [][]byte{[]byte("int")}, RevocationList: [][]byte{[]byte("crl")},
		TlsRootCerts: [][]byte{[]byte("tlsroot")}, FabricNodeOus: nodeOUs}
	out["fabric_msp_config"] = marshal(fmsp)
	mspValue := marshal2(&mspb.MSPConfig{Type: 0, Config: marshal2(fmsp)})
	raft := &etcdraft.ConfigMetadata{Consenters: []*etcdraft.Consenter{{Host: "127.0.0.1", Port: 7050, ClientTlsCert: []byte("c"), ServerTlsCert: []byte("s")}}}
	ctype := &ob.ConsensusType{Type: "etcdraft", Metadata: marshal2(raft)}
	out["consensus_type"] = marshal(ctype)
	group := &cb.ConfigGroup{Groups: map[string]*cb.ConfigGroup{
		"Orderer": {Values: map[string]*cb.ConfigValue{"ConsensusType": {Value: marshal2(ctype), ModPolicy: "Admins"}}, ModPolicy: "Admins"},
		"Application": {Groups: map[string]*cb.ConfigGroup{"OperatorMSP": {Version: 2, Values: map[string]*cb.ConfigValue{"MSP": {Value: mspValue}}}}},
	}, ModPolicy: "Admins"}
	env := &cb.ConfigEnvelope{Config: &cb.Config{Sequence: 3, ChannelGroup: group}}
	b, err := protov2.MarshalOptions{Deterministic: true}.Marshal(proto.MessageV2(env))
	if err != nil {
		panic(err)
	}
	out["config_envelope"] = hex.EncodeToString(b)

	action := &pb.ChaincodeAction{Results: h("0a"), Response: &pb.Response{Status: 200, Payload: []byte(`{"v":1}`)}, ChaincodeId: &pb.ChaincodeID{Name: "bridge", Version: "1"}}
	prp := &pb.ProposalResponsePayload{ProposalHash: h("cc"), Extension: marshal2(action)}
	pr := &pb.ProposalResponse{Version: 1, Timestamp: &timestamp.Timestamp{Seconds: 9}, Response: &pb.Response{Status: 200, Message: "OK"}, Payload: marshal2(prp), Endorsement: &pb.Endorsement{Endorser: h("dd"), Signature: h("ee")}}
	out["chaincode_action"] = marshal(action)
	out["proposal_response_payload"] = marshal(prp)
	out["proposal_response"] = marshal(pr)
	out["response_error"] = marshal(&pb.Response{Status: 500, Message: "nope"})

	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", " ")
	if err := enc.Encode(out); err != nil {
		panic(err)
	}
}

func marshal2(m proto.Message) []byte {
	b, err := proto.Marshal(m)
	if err != nil {
		panic(err)
	}
	return b
}
