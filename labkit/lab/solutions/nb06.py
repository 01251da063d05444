"""Reference solutions for notebook 06 (publishing a port). Try the exercises first!"""

CODE = {
    "06-dnat": """\
# what comes in from elsewhere passes PREROUTING first: rewrite the destination there (DNAT)
sh("ip netns exec $ROUTER iptables -t nat -A PREROUTING -p tcp --dport $HOST_PORT"
   " -j DNAT --to-destination $WEB_ADDR:$WEB_PORT")
# FORWARD comes after: it sees the packet already rewritten, for 10.66.0.2:80
sh("ip netns exec $ROUTER iptables -A FORWARD -d $WEB_ADDR -o $BRIDGE -p tcp --dport $WEB_PORT"
   " -j ACCEPT")
# the way back: the container answers the client's address through the router
sh("ip -n $WEB route add default via $GATEWAY")
sh("ip netns exec $OUTSIDE curl -sS -m 3 http://$ROUTER_ADDR:$HOST_PORT/cgi-bin/who")
""",
    "06-localhost": """\
# the router's own connections pass OUTPUT: jump to LABKIT there, for all its own addresses
sh("ip netns exec $ROUTER iptables -t nat -A OUTPUT -m addrtype --dst-type LOCAL -j LABKIT")
# let a packet from 127.0.0.1 leave by the bridge (else the kernel drops it as a martian)
sh("ip netns exec $ROUTER sysctl -w net.ipv4.conf.$BRIDGE.route_localnet=1")
# the container cannot answer 127.0.0.1 (its own loopback): give it the bridge's address
sh("ip netns exec $ROUTER iptables -t nat -A POSTROUTING -s 127.0.0.0/8 -o $BRIDGE -j MASQUERADE")
sh("ip netns exec $ROUTER curl -sS -m 3 http://$ROUTER_ADDR:$HOST_PORT/cgi-bin/who")
sh("ip netns exec $ROUTER curl -sS -m 3 http://127.0.0.1:$HOST_PORT/cgi-bin/who")
""",
}
