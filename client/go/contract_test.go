// The params contract seen from Go, against a live eventbusd ($EVENTBUS_SERVER): each case raises
// to a subscriber the test runs itself and compares the exact bytes it receives.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	pb "eventbus/gen/go/eventbus/v1"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
)

const contractEvent = "E_CONTRACT_GO"

// subscriber accepts EventBus's one connection and returns one notification at a time.
type subscriber struct {
	listener net.Listener
	conn     net.Conn
	buffer   []byte
}

// accept takes the server's connection on first use and sets a read deadline for the next read.
func (s *subscriber) accept(t *testing.T) {
	t.Helper()
	if s.conn == nil {
		s.listener.(*net.TCPListener).SetDeadline(time.Now().Add(10 * time.Second))
		conn, err := s.listener.Accept()
		if err != nil {
			t.Fatalf("accept: %v", err)
		}
		s.conn = conn
	}
	s.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
}

// next returns the next notification: one is in flight at a time, so it ends where the bytes
// first form valid JSON.
func (s *subscriber) next(t *testing.T) string {
	t.Helper()
	return s.readUntil(t, func(b []byte) bool { return json.Valid(b) })
}

// exactly returns the bytes the subscriber gets until it has n of them (several notifications).
func (s *subscriber) exactly(t *testing.T, n int) string {
	t.Helper()
	return s.readUntil(t, func(b []byte) bool { return len(b) >= n })
}

// readUntil reads until done holds for what was read since the last call, and returns that.
func (s *subscriber) readUntil(t *testing.T, done func([]byte) bool) string {
	t.Helper()
	s.accept(t)
	chunk := make([]byte, 65536)
	for !done(s.buffer) {
		n, err := s.conn.Read(chunk)
		if err != nil {
			t.Fatalf("read after %q: %v", s.buffer, err)
		}
		s.buffer = append(s.buffer, chunk[:n]...)
	}
	message := string(s.buffer)
	s.buffer = nil
	return message
}

func setUp(t *testing.T) (pb.EventBusServiceClient, *subscriber) {
	server := os.Getenv("EVENTBUS_SERVER")
	if server == "" {
		t.Fatal("EVENTBUS_SERVER (HOST:PORT of a live eventbusd) is not set")
	}
	conn, bus, err := Dial(server, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sub := &subscriber{listener: listener}
	socket := "tcp:" + listener.Addr().String()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := bus.Subscribe(ctx, &pb.SubscribeRequest{
		Event: contractEvent, Socket: socket, ExpireSeconds: proto.Uint32(120)}); err != nil {
		t.Fatalf("subscribe: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		bus.Unsubscribe(ctx, &pb.UnsubscribeRequest{Event: contractEvent, Socket: socket})
		if sub.conn != nil {
			sub.conn.Close()
		}
		listener.Close()
		conn.Close()
	})
	return bus, sub
}

func raise(bus pb.EventBusServiceClient, params interface{}) (*pb.RaiseResponse, error) {
	request := &pb.RaiseRequest{Event: contractEvent, Sync: proto.Bool(false)}
	switch p := params.(type) {
	case []*pb.Param:
		request.Params = Named(p...)
	case *structpb.ListValue:
		request.Params = &pb.RaiseRequest_Positional{Positional: p}
	case string:
		request.Params = &pb.RaiseRequest_Json{Json: p}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return bus.Raise(ctx, request)
}

func expectParams(t *testing.T, bus pb.EventBusServiceClient, sub *subscriber, params interface{},
	want string) {
	t.Helper()
	answer, err := raise(bus, params)
	if err != nil {
		t.Fatalf("raise: %v", err)
	}
	// The compact async answer: counted, not listed.
	if answer.GetSubscribers() != 1 || answer.GetQueued() != 1 || len(answer.GetDeliveries()) != 0 {
		t.Fatalf("raise answered %v, want one QUEUED delivery, counted and not listed", answer)
	}
	wire := fmt.Sprintf(`{"jsonrpc":"2.0","method":"%s","params":%s}`, contractEvent, want)
	if got := sub.next(t); got != wire {
		t.Errorf("the subscriber got\n  %s\nwant\n  %s", got, wire)
	}
}

func expectInvalid(t *testing.T, bus pb.EventBusServiceClient, params interface{}, fragment string) {
	t.Helper()
	_, err := raise(bus, params)
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(status.Convert(err).Message(), fragment) {
		t.Errorf("raise: got %v, want INVALID_ARGUMENT containing %q", err, fragment)
	}
}

func number(v float64) *structpb.Value { return structpb.NewNumberValue(v) }

func TestContract(t *testing.T) {
	bus, sub := setUp(t)

	t.Run("SubscriptionPagesHoldEachOnceInSocketOrder", func(t *testing.T) {
		event := contractEvent + "_PAGES"
		sockets := []string{"tcp:127.0.0.1:3", "tcp:127.0.0.1:1", "tcp:127.0.0.1:2"}
		for _, s := range sockets {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			_, err := bus.Subscribe(ctx, &pb.SubscribeRequest{
				Event: event, Socket: s, ExpireSeconds: proto.Uint32(120)})
			cancel()
			if err != nil {
				t.Fatalf("subscribe %s: %v", s, err)
			}
			defer func(s string) {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				bus.Unsubscribe(ctx, &pb.UnsubscribeRequest{Event: event, Socket: s})
			}(s)
		}
		var got []string
		pages := 0
		err := ListAllSubscriptions(bus, 10*time.Second,
			&pb.ListSubscriptionsRequest{Event: event, PageSize: 1},
			func(page *pb.ListSubscriptionsResponse) error {
				pages++
				for _, s := range page.GetSubscriptions() {
					got = append(got, s.GetSocket())
				}
				return nil
			})
		if err != nil {
			t.Fatal(err)
		}
		want := "tcp:127.0.0.1:1 tcp:127.0.0.1:2 tcp:127.0.0.1:3"
		if pages != 3 || strings.Join(got, " ") != want {
			t.Fatalf("%d pages of %v, want 3 pages of %s", pages, got, want)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, err = bus.ListSubscriptions(ctx, &pb.ListSubscriptionsRequest{Event: event, PageSize: -1})
		if status.Code(err) != codes.InvalidArgument ||
			!strings.Contains(status.Convert(err).Message(), "page_size: -1 is negative") {
			t.Fatalf("page_size -1: %v, want INVALID_ARGUMENT naming page_size", err)
		}
	})

	t.Run("IntegersArriveExactlyAsJSONText", func(t *testing.T) {
		expectParams(t, bus, sub, []*pb.Param{
			Uint64Param("a", 1<<53+1), Uint64Param("b", 12345678901234567890),
			Int64Param("c", math.MinInt64), Uint64Param("d", math.MaxUint64), JSONParam("e", "1.50"),
		}, `{"a":9007199254740993,"b":12345678901234567890,"c":-9223372036854775808,`+
			`"d":18446744073709551615,"e":1.50}`)
	})

	t.Run("ValueNumbersAreFloat64SoBigIntegersRound", func(t *testing.T) {
		// Documented: a Value holds a float64, so 2^53+1 is rounded before it leaves Go. Use
		// Uint64Param/Int64Param (JSON text) for such integers.
		expectParams(t, bus, sub, []*pb.Param{
			ValueParam("n", number(float64(uint64(1<<53+1)))),
			ValueParam("m", number(float64(uint64(12345678901234567890)))),
		}, `{"n":9007199254740992,"m":1.2345678901234567e+19}`)
	})

	t.Run("PositionalValuesRoundAndWholeParamsJSONIsExact", func(t *testing.T) {
		list := &structpb.ListValue{Values: []*structpb.Value{number(float64(uint64(1<<53 + 1))), number(3)}}
		expectParams(t, bus, sub, list, `[9007199254740992,3]`)
		expectParams(t, bus, sub, "[9007199254740993, 12345678901234567890]",
			`[9007199254740993,12345678901234567890]`)
	})

	t.Run("UnsetValueIsInvalidArgumentNamingTheParam", func(t *testing.T) {
		expectInvalid(t, bus, []*pb.Param{ValueParam("count", &structpb.Value{})}, `param "count": no value`)
		expectInvalid(t, bus, []*pb.Param{{Name: "count"}}, `param "count": no value`)
	})

	t.Run("NaNAndInfinityAreInvalidArgument", func(t *testing.T) {
		expectInvalid(t, bus, []*pb.Param{ValueParam("x", number(math.NaN()))},
			`param "x": NaN cannot be sent as JSON`)
		expectInvalid(t, bus, []*pb.Param{ValueParam("y", number(math.Inf(-1)))},
			`param "y": -Infinity cannot be sent as JSON`)
	})

	t.Run("JSONFormKeepsKeyOrderAndAStructSortsIt", func(t *testing.T) {
		type inner struct {
			Y int `json:"y"`
			B int `json:"b"`
		}
		obj, err := MarshalParam("obj", struct {
			Z int   `json:"z"`
			A inner `json:"a"`
		}{1, inner{2, 3}})
		if err != nil {
			t.Fatal(err)
		}
		expectParams(t, bus, sub, []*pb.Param{obj}, `{"obj":{"z":1,"a":{"y":2,"b":3}}}`)
		sorted, err := structpb.NewValue(map[string]interface{}{"z": 1, "a": 2})
		if err != nil {
			t.Fatal(err)
		}
		expectParams(t, bus, sub, []*pb.Param{ValueParam("obj", sorted)}, `{"obj":{"a":2,"z":1}}`)
	})

	t.Run("StringsBooleansAndNullTravelAsValues", func(t *testing.T) {
		expectParams(t, bus, sub, []*pb.Param{
			ValueParam("s", structpb.NewStringValue(`café "q"`)), ValueParam("t", structpb.NewBoolValue(true)),
			ValueParam("f", structpb.NewBoolValue(false)), ValueParam("n", structpb.NewNullValue()),
		}, `{"s":"café \"q\"","t":true,"f":false,"n":null}`)
	})
	t.Run("RaiseStreamAnswersEachEventInOrderAndDeliversInOrder", func(t *testing.T) {
		stream := openStream(t, bus)
		event := func(name string, params ...*pb.Param) *pb.RaiseRequest {
			return &pb.RaiseRequest{Event: name, Sync: proto.Bool(false), Params: Named(params...)}
		}
		seq := func(n int64) *pb.Param { return Int64Param("seq", n) }
		// Three messages; the second's middle event has a bad name.
		messages := [][]*pb.RaiseRequest{
			{event(contractEvent, seq(0), Uint64Param("id", 12345678901234567890)),
				event(contractEvent, seq(1), JSONParam("obj", `{"z":1,"a":2}`)),
				{Event: contractEvent, Sync: proto.Bool(false),
					Params: &pb.RaiseRequest_Json{Json: "[2, 18446744073709551615]"}}},
			{event(contractEvent, seq(3), ValueParam("s", structpb.NewStringValue("café"))),
				event("bad event!", seq(-1)),
				event(contractEvent, seq(4), ValueParam("t", structpb.NewBoolValue(true)))},
			{event(contractEvent, seq(5)), event(contractEvent, seq(6), Int64Param("id", math.MinInt64))},
		}
		// Sent from another goroutine, as a publisher would: Send blocks while the server is behind.
		sendErr := make(chan error, 1)
		go func() {
			for _, m := range messages {
				if err := stream.Send(m...); err != nil {
					sendErr <- err
					return
				}
			}
			sendErr <- stream.CloseSend()
		}()
		var got []string
		for {
			results, err := stream.Recv()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("recv: %v", err)
			}
			for _, r := range results {
				if r.Event != messages[r.Message][r.Index] {
					t.Errorf("result %d.%d is not for the event sent there", r.Message, r.Index)
				}
				if r.Err != nil {
					got = append(got, fmt.Sprintf("%d.%d %s %s", r.Message, r.Index, status.Code(r.Err),
						status.Convert(r.Err).Message()))
					continue
				}
				got = append(got, fmt.Sprintf("%d.%d subscribers=%d queued=%d", r.Message, r.Index,
					r.Response.GetSubscribers(), r.Response.GetQueued()))
			}
		}
		if err := <-sendErr; err != nil {
			t.Fatalf("send: %v", err)
		}
		ok := func(m, i int) string { return fmt.Sprintf("%d.%d subscribers=1 queued=1", m, i) }
		want := []string{ok(0, 0), ok(0, 1), ok(0, 2), ok(1, 0),
			`1.1 InvalidArgument event [1]: `, ok(1, 2), ok(2, 0), ok(2, 1)}
		if len(got) != len(want) {
			t.Fatalf("results\n  %s\nwant\n  %s", strings.Join(got, "\n  "), strings.Join(want, "\n  "))
		}
		for i := range want {
			if !strings.HasPrefix(got[i], want[i]) {
				t.Errorf("result %d: %s, want %s...", i, got[i], want[i])
			}
		}
		if !strings.Contains(got[4], "bad event!") {
			t.Errorf("the error %q does not name the event", got[4])
		}
		wire := ""
		for _, p := range []string{`{"seq":0,"id":12345678901234567890}`, `{"seq":1,"obj":{"z":1,"a":2}}`,
			`[2,18446744073709551615]`, `{"seq":3,"s":"café"}`, `{"seq":4,"t":true}`, `{"seq":5}`,
			`{"seq":6,"id":-9223372036854775808}`} {
			wire += fmt.Sprintf(`{"jsonrpc":"2.0","method":"%s","params":%s}`, contractEvent, p)
		}
		if got := sub.exactly(t, len(wire)); got != wire {
			t.Errorf("the subscriber got\n  %s\nwant\n  %s", got, wire)
		}
	})

	t.Run("RaiseStreamErrorIsAStatusAfterTheEarlierAnswers", func(t *testing.T) {
		stream := openStream(t, bus)
		// A message of more than 10000 events ends the stream; the one before it is answered first.
		tooMany := make([]*pb.RaiseRequest, 10001)
		for i := range tooMany {
			tooMany[i] = &pb.RaiseRequest{Event: contractEvent}
		}
		first := &pb.RaiseRequest{Event: contractEvent, Sync: proto.Bool(false),
			Params: Named(Int64Param("seq", 7))}
		if err := stream.Send(first); err != nil {
			t.Fatal(err)
		}
		if err := stream.Send(tooMany...); err != nil && err != io.EOF {
			t.Fatal(err)
		}
		results, err := stream.Recv()
		if err != nil || len(results) != 1 || results[0].Err != nil {
			t.Fatalf("first answer: %v %v, want one response", results, err)
		}
		_, err = stream.Recv()
		if status.Code(err) != codes.InvalidArgument ||
			!strings.Contains(status.Convert(err).Message(), "message 2 has more than 10000 events") {
			t.Fatalf("second answer: %v, want INVALID_ARGUMENT naming message 2", err)
		}
		wire := fmt.Sprintf(`{"jsonrpc":"2.0","method":"%s","params":{"seq":7}}`, contractEvent)
		if got := sub.exactly(t, len(wire)); got != wire {
			t.Errorf("the subscriber got\n  %s\nwant\n  %s", got, wire)
		}
	})
	t.Run("RaiseStreamToAServerGoneIsUnavailable", func(t *testing.T) {
		gone, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		address := gone.Addr().String()
		gone.Close()
		// Not Dial: it waits for the connection (WithBlock), which never comes.
		conn, err := grpc.Dial(address, grpc.WithInsecure())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		stream, err := OpenRaiseStream(ctx, pb.NewEventBusServiceClient(conn))
		if err == nil {
			defer stream.Close()
			if err = stream.Send(&pb.RaiseRequest{Event: contractEvent}); err == nil || err == io.EOF {
				_, err = stream.Recv()
			}
		}
		if status.Code(err) != codes.Unavailable {
			t.Fatalf("got %v, want UNAVAILABLE", err)
		}
	})
}

// openStream opens a RaiseStream to bus with 30 s to run; it is closed when the test ends.
func openStream(t *testing.T, bus pb.EventBusServiceClient) *RaiseStream {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	stream, err := OpenRaiseStream(ctx, bus)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stream.Close() })
	return stream
}
