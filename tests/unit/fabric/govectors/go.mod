module parkrelay.local/govectors

go 1.22

require (
	github.com/golang/protobuf v1.5.4
	github.com/hyperledger/fabric-protos-go v0.2.0
	google.golang.org/protobuf v1.33.0
)

require (
	golang.org/x/net v0.0.0-20190311183353-d8887717615a // indirect
	golang.org/x/sys v0.0.0-20190215142949-d0b11bdaac8a // indirect
	golang.org/x/text v0.3.0 // indirect
	google.golang.org/genproto v0.0.0-20180817151627-c66870c02cf8 // indirect
	google.golang.org/grpc v1.23.0 // indirect
)
