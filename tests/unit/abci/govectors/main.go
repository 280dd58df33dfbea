// Command govectors writes ../vectors/go_messages.json: ABCI Request/Response envelopes encoded by CometBFT
// v0.38.25's own Go types (gogoproto), which tests/unit/abci/test_go_vectors.py rebuilds field for field with
// relay.chain.abci.types and compares byte for byte. Run offline from the module cache:
//
//	GOSUMDB=off GOPROXY=off GOFLAGS=-mod=mod go run . > ../vectors/go_messages.json
package main

import (
	"encoding/hex"
	"encoding/json"
	"os"
	"time"

	abci "github.com/cometbft/cometbft/abci/types"
	pc "github.com/cometbft/cometbft/proto/tendermint/crypto"
	pt "github.com/cometbft/cometbft/proto/tendermint/types"
)

type vector struct {
	Name string `json:"name"`
	Kind string `json:"kind"`
	Hex  string `json:"hex"`
}

func main() {
	t := time.Unix(1700000000, 123456789).UTC()
	val := abci.Validator{Address: []byte("0123456789abcdefghij"), Power: 10}
	ed := abci.ValidatorUpdate{PubKey: pc.PublicKey{Sum: &pc.PublicKey_Ed25519{Ed25519: make([]byte, 32)}}, Power: 7}
	secp := abci.ValidatorUpdate{PubKey: pc.PublicKey{Sum: &pc.PublicKey_Secp256K1{Secp256K1: append([]byte{2}, make([]byte, 32)...)}}, Power: 0}
	params := &pt.ConsensusParams{
		Block:     &pt.BlockParams{MaxBytes: 22020096, MaxGas: -1},
		Evidence:  &pt.EvidenceParams{MaxAgeNumBlocks: 100000, MaxAgeDuration: 48 * time.Hour, MaxBytes: 1048576},
		Validator: &pt.ValidatorParams{PubKeyTypes: []string{"ed25519", "secp256k1"}},
		Version:   &pt.VersionParams{App: 3},
		Abci:      &pt.ABCIParams{VoteExtensionsEnableHeight: 1},
	}
	commit := abci.CommitInfo{Round: 2, Votes: []abci.VoteInfo{
		{Validator: val, BlockIdFlag: pt.BlockIDFlagCommit},
		{Validator: abci.Validator{}, BlockIdFlag: pt.BlockIDFlagAbsent},
	}}
	ext := abci.ExtendedCommitInfo{Round: 0, Votes: []abci.ExtendedVoteInfo{
		{Validator: val, VoteExtension: []byte("ext"), ExtensionSignature: []byte("sig"), BlockIdFlag: pt.BlockIDFlagCommit},
		{Validator: val, BlockIdFlag: pt.BlockIDFlagNil},
	}}
	mis := []abci.Misbehavior{{Type: abci.MisbehaviorType_DUPLICATE_VOTE, Validator: val, Height: 3, Time: t, TotalVotingPower: 40}}
	txs := [][]byte{[]byte("a=1"), {}, []byte("b=2")}
	hash := []byte("0123456789abcdef0123456789abcdef")
	event := abci.Event{Type: "kv", Attributes: []abci.EventAttribute{{Key: "key", Value: "välue", Index: true}, {Key: "k2"}}}

	reqs := []struct {
		name string
		r    *abci.Request
	}{
		{"echo", abci.ToRequestEcho("héllo")},
		{"echo_empty", abci.ToRequestEcho("")},
		{"flush", abci.ToRequestFlush()},
		{"info", abci.ToRequestInfo(&abci.RequestInfo{Version: "0.38.25", BlockVersion: 11, P2PVersion: 8, AbciVersion: "2.0.0"})},
		{"init_chain", abci.ToRequestInitChain(&abci.RequestInitChain{Time: t, ChainId: "test-chain", ConsensusParams: params,
			Validators: []abci.ValidatorUpdate{ed, secp}, AppStateBytes: []byte(`{"a":1}`), InitialHeight: 1})},
		{"init_chain_minimal", abci.ToRequestInitChain(&abci.RequestInitChain{Time: time.Unix(0, 0).UTC()})},
		{"query", abci.ToRequestQuery(&abci.RequestQuery{Data: []byte("key"), Path: "/store", Height: -1, Prove: true})},
		{"check_tx", abci.ToRequestCheckTx(&abci.RequestCheckTx{Tx: []byte("a=1"), Type: abci.CheckTxType_Recheck})},
		{"commit", abci.ToRequestCommit()},
		{"list_snapshots", abci.ToRequestListSnapshots(&abci.RequestListSnapshots{})},
		{"offer_snapshot", abci.ToRequestOfferSnapshot(&abci.RequestOfferSnapshot{Snapshot: &abci.Snapshot{Height: 100, Format: 1, Chunks: 3, Hash: hash, Metadata: []byte("m")}, AppHash: hash})},
		{"offer_snapshot_empty", abci.ToRequestOfferSnapshot(&abci.RequestOfferSnapshot{Snapshot: &abci.Snapshot{}})},
		{"load_snapshot_chunk", abci.ToRequestLoadSnapshotChunk(&abci.RequestLoadSnapshotChunk{Height: 100, Format: 1, Chunk: 2})},
		{"apply_snapshot_chunk", abci.ToRequestApplySnapshotChunk(&abci.RequestApplySnapshotChunk{Index: 2, Chunk: []byte("chunk"), Sender: "peer"})},
		{"prepare_proposal", abci.ToRequestPrepareProposal(&abci.RequestPrepareProposal{MaxTxBytes: 1 << 20, Txs: txs, LocalLastCommit: ext,
			Misbehavior: mis, Height: 5, Time: t, NextValidatorsHash: hash, ProposerAddress: val.Address})},
		{"process_proposal", abci.ToRequestProcessProposal(&abci.RequestProcessProposal{Txs: txs, ProposedLastCommit: commit,
			Misbehavior: mis, Hash: hash, Height: 5, Time: t, NextValidatorsHash: hash, ProposerAddress: val.Address})},
		{"extend_vote", abci.ToRequestExtendVote(&abci.RequestExtendVote{Hash: hash, Height: 5, Time: t, Txs: txs,
			ProposedLastCommit: commit, Misbehavior: mis, NextValidatorsHash: hash, ProposerAddress: val.Address})},
		{"verify_vote_extension", abci.ToRequestVerifyVoteExtension(&abci.RequestVerifyVoteExtension{Hash: hash, ValidatorAddress: val.Address, Height: 5, VoteExtension: []byte("ext")})},
		{"finalize_block", abci.ToRequestFinalizeBlock(&abci.RequestFinalizeBlock{Txs: txs, DecidedLastCommit: commit,
			Misbehavior: mis, Hash: hash, Height: 5, Time: t, NextValidatorsHash: hash, ProposerAddress: val.Address})},
		{"finalize_block_empty", abci.ToRequestFinalizeBlock(&abci.RequestFinalizeBlock{Time: time.Unix(0, 0).UTC()})},
	}
	resps := []struct {
		name string
		r    *abci.Response
	}{
		{"exception", abci.ToResponseException("boom")},
		{"echo", abci.ToResponseEcho("héllo")},
		{"flush", abci.ToResponseFlush()},
		{"info", abci.ToResponseInfo(&abci.ResponseInfo{Data: "kv", Version: "1", AppVersion: 3, LastBlockHeight: 9, LastBlockAppHash: hash})},
		{"init_chain", abci.ToResponseInitChain(&abci.ResponseInitChain{ConsensusParams: params, Validators: []abci.ValidatorUpdate{ed}, AppHash: hash})},
		{"init_chain_empty_params", abci.ToResponseInitChain(&abci.ResponseInitChain{ConsensusParams: &pt.ConsensusParams{}})},
		{"query", abci.ToResponseQuery(&abci.ResponseQuery{Code: 1, Log: "log", Info: "info", Index: -2, Key: []byte("k"), Value: []byte("v"),
			ProofOps: &pc.ProofOps{Ops: []pc.ProofOp{{Type: "ics23", Key: []byte("k"), Data: []byte("d")}, {}}}, Height: 9, Codespace: "kv"})},
		{"check_tx", abci.ToResponseCheckTx(&abci.ResponseCheckTx{Code: 4294967295, Data: []byte("d"), Log: "l", Info: "i", GasWanted: -5, GasUsed: 3, Events: []abci.Event{event}, Codespace: "c"})},
		{"commit", abci.ToResponseCommit(&abci.ResponseCommit{RetainHeight: 4})},
		{"list_snapshots", abci.ToResponseListSnapshots(&abci.ResponseListSnapshots{Snapshots: []*abci.Snapshot{{Height: 1, Format: 2, Chunks: 3, Hash: hash}, {}}})},
		{"offer_snapshot", abci.ToResponseOfferSnapshot(&abci.ResponseOfferSnapshot{Result: abci.ResponseOfferSnapshot_REJECT_SENDER})},
		{"load_snapshot_chunk", abci.ToResponseLoadSnapshotChunk(&abci.ResponseLoadSnapshotChunk{Chunk: []byte("chunk")})},
		{"apply_snapshot_chunk", abci.ToResponseApplySnapshotChunk(&abci.ResponseApplySnapshotChunk{Result: abci.ResponseApplySnapshotChunk_RETRY, RefetchChunks: []uint32{0, 1, 300, 4294967295}, RejectSenders: []string{"p1", ""}})},
		{"prepare_proposal", abci.ToResponsePrepareProposal(&abci.ResponsePrepareProposal{Txs: txs})},
		{"process_proposal", abci.ToResponseProcessProposal(&abci.ResponseProcessProposal{Status: abci.ResponseProcessProposal_REJECT})},
		{"extend_vote", abci.ToResponseExtendVote(&abci.ResponseExtendVote{VoteExtension: []byte("ext")})},
		{"verify_vote_extension", abci.ToResponseVerifyVoteExtension(&abci.ResponseVerifyVoteExtension{Status: abci.ResponseVerifyVoteExtension_ACCEPT})},
		{"finalize_block", abci.ToResponseFinalizeBlock(&abci.ResponseFinalizeBlock{Events: []abci.Event{event},
			TxResults: []*abci.ExecTxResult{{Code: 0, Data: []byte("ok"), GasUsed: 1, Events: []abci.Event{event}}, {Code: 1, Log: "bad", Codespace: "kv", GasWanted: -1, Info: "i"}},
			ValidatorUpdates: []abci.ValidatorUpdate{ed, secp}, ConsensusParamUpdates: &pt.ConsensusParams{Abci: &pt.ABCIParams{VoteExtensionsEnableHeight: 10}}, AppHash: hash})},
		{"finalize_block_empty", abci.ToResponseFinalizeBlock(&abci.ResponseFinalizeBlock{})},
	}
	var out []vector
	for _, c := range reqs {
		b, err := c.r.Marshal()
		if err != nil {
			panic(err)
		}
		out = append(out, vector{c.name, "request", hex.EncodeToString(b)})
	}
	for _, c := range resps {
		b, err := c.r.Marshal()
		if err != nil {
			panic(err)
		}
		out = append(out, vector{c.name, "response", hex.EncodeToString(b)})
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(map[string]any{"cometbft": "v0.38.25", "produced_by": "tests/unit/abci/govectors (go run .)", "vectors": out}); err != nil {
		panic(err)
	}
}
