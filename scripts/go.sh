# scripts/go.sh — sourced by every script that builds or tests custos: the
# build settings all of them share, so that what scripts/test checks is
# what scripts/bench measures and scripts/rehearse runs.
#
# -tags=urfave_cli_no_docs leaves urfave/cli's markdown man page renderer
# (go-md2man and blackfriday) out of the binary. custos writes its man page
# itself (cmd/custos/man.go); blackfriday's package initialisation cost
# every custos command about 1.5 ms of processor time at start, a tenth
# of a whole recovery's (issue 12). A build without the tag works the same,
# only slower to start. cmd/custos's TestBuildLeavesOutMarkdown reads the
# tags from this line.
export GOFLAGS="-tags=urfave_cli_no_docs${GOFLAGS:+ $GOFLAGS}"

# The tags the fuzz targets' binaries are built with (scripts/test's smoke
# runs, scripts/fuzz): custos_noetcdclient also leaves out the store's
# tests that use etcd's own Go packages (store/etcd_client_test.go,
# store/etcdwire_test.go). The fuzzing engine copies every coverage counter
# of the binary, as JSON, for each input it gathers; etcd's client, gRPC
# and protobuf were 75,000 of the store binary's 128,000 counters, and the
# store's fuzz targets took twice as long. FuzzEtcdWire, which checks
# custos's decoder against etcd's, runs from a binary built without it.
# store's TestFuzzBuildLeavesOutEtcd reads the tags from this line.
fuzztags=urfave_cli_no_docs,custos_noetcdclient
