"""Reference solutions for notebook 05 (container networking). Try the exercises first!"""

CODE = {
    "05-veth-pair": """\
sh("ip link add va type veth peer name vb")  # a cable: two ends, here in this cell's namespace
sh("ip link set va netns $A")  # one end into each namespace
sh("ip link set vb netns $B")
sh("ip -n $A addr add $ADDR_A dev va")  # 203.0.113.1/24: the /24 also makes the route
sh("ip -n $B addr add $ADDR_B dev vb")
sh("ip -n $A link set va up")  # a new link is DOWN until someone sets it up
sh("ip -n $B link set vb up")
sh("ip netns exec $A busybox ping -c1 -W1 203.0.113.2")
""",
    "05-masquerade": """\
sh("ip -n $A route add default via $GATEWAY")  # A: what is not on the bridge goes to the router
sh("ip netns exec $ROUTER sysctl -w net.ipv4.ip_forward=1")  # the router passes packets on
sh("ip netns exec $ROUTER iptables -A FORWARD -i $BRIDGE ! -o $BRIDGE -j ACCEPT")  # way out
sh("ip netns exec $ROUTER iptables -A FORWARD -o $BRIDGE"
   " -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT")  # and the replies back in
sh("ip netns exec $ROUTER iptables -t nat -A POSTROUTING -s $SUBNET ! -o $BRIDGE -j MASQUERADE")
sh("ip netns exec $A busybox ping -c1 -W1 $OUTSIDE_ADDR")
""",
}
