// Helpers for calling EventBus (eventbus.v1.EventBusService) from Go: dialing, building params
// in the form that carries each value exactly, and printing per-target outcomes.
//
// Built in GOPATH mode against Debian's grpc-go 1.33 and protobuf-go 1.28 with the code protoc
// generates into $GOPATH/src/eventbus/gen/go/eventbus/v1 (see README.md beside this file).
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	pb "eventbus/gen/go/eventbus/v1"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"
)

// Dial connects to the EventBus server at addr (HOST:PORT) without TLS, waiting at most timeout.
// grpc-go 1.33 has no credentials/insecure package: WithInsecure is its spelling.
func Dial(addr string, timeout time.Duration) (*grpc.ClientConn, pb.EventBusServiceClient, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	conn, err := grpc.DialContext(ctx, addr, grpc.WithInsecure(), grpc.WithBlock())
	if err != nil {
		return nil, nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	return conn, pb.NewEventBusServiceClient(conn), nil
}

// ListAllSubscriptions calls ListSubscriptions page after page (req's PageToken is ignored; its
// PageSize sizes the pages, 0 = the server's default), each call with its own timeout, and hands
// each page to page as it arrives. It stops after the last page (an empty NextPageToken), or at
// the first error of a call or of page.
func ListAllSubscriptions(bus pb.EventBusServiceClient, timeout time.Duration,
	req *pb.ListSubscriptionsRequest, page func(*pb.ListSubscriptionsResponse) error) error {
	next := &pb.ListSubscriptionsRequest{Event: req.GetEvent(), PageSize: req.GetPageSize()}
	for {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		resp, err := bus.ListSubscriptions(ctx, next)
		cancel()
		if err != nil {
			return err
		}
		if err := page(resp); err != nil {
			return err
		}
		if resp.GetNextPageToken() == "" {
			return nil
		}
		next.PageToken = resp.GetNextPageToken()
	}
}

// JSONParam returns a param sent as JSON text, token for token: integers of any size exactly,
// object keys in the given order.
func JSONParam(name, text string) *pb.Param {
	return &pb.Param{Name: name, Form: &pb.Param_Json{Json: text}}
}

// Uint64Param returns a param carrying v exactly (as JSON text: a Value would make it a double).
func Uint64Param(name string, v uint64) *pb.Param {
	return JSONParam(name, strconv.FormatUint(v, 10))
}

// Int64Param returns a param carrying v exactly (as JSON text: a Value would make it a double).
func Int64Param(name string, v int64) *pb.Param {
	return JSONParam(name, strconv.FormatInt(v, 10))
}

// MarshalParam returns a param carrying json.Marshal(v) as JSON text. Struct fields keep their
// declaration order; map keys come out sorted (encoding/json sorts them).
func MarshalParam(name string, v interface{}) (*pb.Param, error) {
	text, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("param %q: %w", name, err)
	}
	return JSONParam(name, string(text)), nil
}

// ValueParam returns a param carried as a google.protobuf.Value: for strings, booleans, null and
// numbers within +-2^53 (a Value's number is a float64).
func ValueParam(name string, v *structpb.Value) *pb.Param {
	return &pb.Param{Name: name, Form: &pb.Param_Value{Value: v}}
}

// Named returns the params of a RaiseRequest as a JSON object, in the order given.
func Named(params ...*pb.Param) *pb.RaiseRequest_Named {
	return &pb.RaiseRequest_Named{Named: &pb.NamedParams{Params: params}}
}

// StatusName returns DELIVERY_STATUS_OK as "OK".
func StatusName(s pb.DeliveryStatus) string {
	return strings.TrimPrefix(s.String(), "DELIVERY_STATUS_")
}

// StateName returns CONNECTION_STATE_CONNECTED as "CONNECTED".
func StateName(s pb.ConnectionState) string {
	return strings.TrimPrefix(s.String(), "CONNECTION_STATE_")
}

// FormatDelivery returns one line per target: socket, status, latency, then the result or error.
func FormatDelivery(d *pb.Delivery) string {
	ms := float64(d.GetLatency().AsDuration().Microseconds()) / 1000
	line := fmt.Sprintf("%s  %s  %.2f ms", d.GetSocket(), StatusName(d.GetStatus()), ms)
	switch {
	case d.GetStatus() == pb.DeliveryStatus_DELIVERY_STATUS_OK && d.GetResult() != "":
		line += "  " + d.GetResult()
	case d.GetStatus() == pb.DeliveryStatus_DELIVERY_STATUS_RPC_ERROR:
		line += fmt.Sprintf("  error %d %s", d.GetError().GetCode(), d.GetError().GetMessage())
	case d.GetDetail() != "":
		line += "  " + d.GetDetail()
	}
	return line
}

// RaiseStream is one RaiseStream call: Send sends a message of one or more events, Recv returns
// the answer to the oldest message not yet answered, one StreamResult per event. One goroutine
// may Send (then CloseSend) while another Recvs; each method from one goroutine at a time. The
// server reads a message only once it can take it, so Send blocks when the stream is ahead of it:
// a sender that never lets a receiver drain the answers stalls, by design.
type RaiseStream struct {
	stream pb.EventBusService_RaiseStreamClient
	cancel context.CancelFunc
	mu     sync.Mutex
	sent   [][]*pb.RaiseRequest // the messages sent and not yet answered, oldest first
	next   int                  // the number of the next message to answer, from 0
}

// StreamResult is what became of one event of a RaiseStream message: Message (its message's
// number on the stream, from 0) and Index (its place in the message, from 0), the Event as sent,
// and either Response (what Raise would have answered) or Err (what Raise would have failed with:
// a status error, status.Code(Err) is e.g. codes.InvalidArgument and its message names the index,
// "event [1]: ...").
type StreamResult struct {
	Message  int
	Index    int
	Event    *pb.RaiseRequest
	Response *pb.RaiseResponse
	Err      error
}

// OpenRaiseStream opens a RaiseStream call on bus. The call ends with ctx (its deadline is the
// whole stream's) or with Close. A server that cannot be reached shows up as a status error
// (codes.Unavailable) here or from the first Send or Recv.
func OpenRaiseStream(ctx context.Context, bus pb.EventBusServiceClient) (*RaiseStream, error) {
	ctx, cancel := context.WithCancel(ctx)
	stream, err := bus.RaiseStream(ctx)
	if err != nil {
		cancel()
		// As it is: grpc-go 1.33's status.Code does not look inside a wrapped error.
		return nil, err
	}
	return &RaiseStream{stream: stream, cancel: cancel}, nil
}

// Send sends events as one message (build each as for Raise, e.g. with Named and Uint64Param).
// It returns io.EOF when the stream has ended: Recv then returns why.
func (s *RaiseStream) Send(events ...*pb.RaiseRequest) error {
	// Recorded before it is sent: its answer may come before Send returns.
	s.mu.Lock()
	s.sent = append(s.sent, events)
	s.mu.Unlock()
	return s.stream.Send(&pb.RaiseStreamRequest{Events: events})
}

// CloseSend tells the server that no more messages follow; it answers what it has, then ends the
// call, and Recv returns io.EOF after the last answer.
func (s *RaiseStream) CloseSend() error {
	return s.stream.CloseSend()
}

// Recv returns the results of the oldest message not yet answered, one per event in order; io.EOF
// once the server has answered everything after CloseSend; otherwise the call's error as a status
// error (codes.Unauthenticated, codes.Unavailable when the server is gone, codes.DeadlineExceeded,
// codes.InvalidArgument for a message of more than 10000 events, ...).
func (s *RaiseStream) Recv() ([]StreamResult, error) {
	answer, err := s.stream.Recv()
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	var events []*pb.RaiseRequest
	if len(s.sent) > 0 {
		events, s.sent = s.sent[0], s.sent[1:]
	}
	message := s.next
	s.next++
	s.mu.Unlock()
	if len(answer.GetResults()) != len(events) {
		s.Close()
		return nil, fmt.Errorf("raise stream: message %d of %d event(s) got %d result(s)", message,
			len(events), len(answer.GetResults()))
	}
	results := make([]StreamResult, len(events))
	for i, result := range answer.GetResults() {
		results[i] = StreamResult{Message: message, Index: i, Event: events[i],
			Response: result.GetResponse()}
		if e := result.GetError(); e != nil {
			results[i].Err = status.Error(codes.Code(e.GetCode()), e.GetMessage())
		}
	}
	return results, nil
}

// Close abandons the call if it is still open (Send and Recv then fail with codes.Canceled); after
// Recv has returned io.EOF it only releases the call's context. Always call it.
func (s *RaiseStream) Close() {
	s.cancel()
}
