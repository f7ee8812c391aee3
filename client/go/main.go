// Command example subscribes a JSON-RPC server to an event, raises it async and sync with exact
// params, lists the subscription and unsubscribes it.
//
// Usage: example SERVER SOCKET [EVENT]
//
//	SERVER  the EventBus gRPC address, e.g. 127.0.0.1:50051
//	SOCKET  the subscriber, e.g. tcp:127.0.0.1:8080 (a JSON-RPC server that answers requests)
package main

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	pb "eventbus/gen/go/eventbus/v1"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
)

// inner and object are the "obj" param: encoding/json writes struct fields in declaration order,
// so "z" goes before "a" (a map would come out sorted).
type inner struct {
	Y []interface{} `json:"y"`
	B string        `json:"b"`
}

type object struct {
	Z int   `json:"z"`
	A inner `json:"a"`
}

func run(server, socket, event string) error {
	conn, bus, err := Dial(server, 10*time.Second)
	if err != nil {
		return err
	}
	defer conn.Close()
	call := func() (context.Context, context.CancelFunc) {
		return context.WithTimeout(context.Background(), 10*time.Second)
	}

	ctx, cancel := call()
	sub, err := bus.Subscribe(ctx, &pb.SubscribeRequest{
		Event: event, Socket: socket, ExpireSeconds: proto.Uint32(60)})
	cancel()
	if err != nil {
		return fmt.Errorf("subscribe: %w", err)
	}
	s := sub.GetSubscription()
	fmt.Printf("subscribed %s %s %s created=%t\n", s.GetId(), s.GetEvent(), s.GetSocket(),
		sub.GetCreated())

	obj, err := MarshalParam("obj", object{Z: 1, A: inner{Y: []interface{}{true, nil}, B: "x"}})
	if err != nil {
		return err
	}
	params := Named(
		Uint64Param("id", 12345678901234567890), // exact: JSON text, not a float64
		obj,
		ValueParam("ok", structpb.NewBoolValue(true)),
		ValueParam("name", structpb.NewStringValue("café")),
		Int64Param("count", 3),
	)
	for _, sync := range []bool{false, true} {
		ctx, cancel := call()
		answer, err := bus.Raise(ctx, &pb.RaiseRequest{
			Event: event, Params: params, Sync: proto.Bool(sync), TimeoutMs: proto.Uint32(5000),
			// Every delivery, QUEUED ones too, so the async answer shows its one target.
			AllDeliveries: true})
		cancel()
		if err != nil {
			return fmt.Errorf("raise: %w", err)
		}
		mode := "async"
		if sync {
			mode = "sync"
		}
		fmt.Printf("raise %s: subscribers=%d\n", mode, answer.GetSubscribers())
		for _, d := range answer.GetDeliveries() {
			fmt.Println("  " + FormatDelivery(d))
		}
	}

	// Page by page (the server answers at most PageSize per call; 0: its default).
	var subscriptions []*pb.Subscription
	stale := ""
	err = ListAllSubscriptions(bus, 10*time.Second, &pb.ListSubscriptionsRequest{Event: event, PageSize: 100},
		func(page *pb.ListSubscriptionsResponse) error {
			subscriptions = append(subscriptions, page.GetSubscriptions()...)
			if page.GetStale() {
				stale = " (stale)"
			}
			return nil
		})
	if err != nil {
		return fmt.Errorf("list: %w", err)
	}
	fmt.Printf("list %s: %d subscription(s)%s\n", event, len(subscriptions), stale)
	for _, l := range subscriptions {
		var targets []string
		for _, t := range l.GetTargets() {
			targets = append(targets, fmt.Sprintf("%s %s delivered=%d failed=%d", t.GetAddress(),
				StateName(t.GetState()), t.GetDelivered(), t.GetFailed()))
		}
		fmt.Printf("  %s  %s  %s  ttl=%ds  [%s]\n", l.GetId(), l.GetEvent(), l.GetSocket(),
			int64(l.GetTtl().AsDuration().Seconds()), strings.Join(targets, ", "))
	}

	ctx, cancel = call()
	removed, err := bus.Unsubscribe(ctx, &pb.UnsubscribeRequest{Id: s.GetId()})
	cancel()
	if err != nil {
		return fmt.Errorf("unsubscribe: %w", err)
	}
	fmt.Printf("unsubscribed removed=%d\n", removed.GetRemoved())
	return nil
}

func main() {
	if len(os.Args) != 3 && len(os.Args) != 4 {
		fmt.Fprintln(os.Stderr, "usage: example SERVER SOCKET [EVENT]")
		os.Exit(2)
	}
	event := "E_GO"
	if len(os.Args) == 4 {
		event = os.Args[3]
	}
	if err := run(os.Args[1], os.Args[2], event); err != nil {
		fmt.Fprintf(os.Stderr, "example: %v\n", err)
		os.Exit(1)
	}
}
